using System.Collections.Concurrent;
using DanceMoE.Contracts;
using DanceMoE.Hosting;
using MassTransit;

namespace DanceMoE.Coordinator;

/// <summary>
/// Sends the active placement to an edge whose heartbeat says it routes by another one: an edge that (re)started from
/// its bootstrap file, or missed the event while it was down. At most once per edge every few seconds.
/// </summary>
public sealed class LaggingEdges(PlacementRegistry registry, TimeProvider time)
{
    private static readonly TimeSpan Every = TimeSpan.FromSeconds(5);
    private readonly ConcurrentDictionary<string, DateTimeOffset> _sent = new(StringComparer.Ordinal);

    public async Task CatchUpAsync(EdgeHeartbeat beat, ISendEndpointProvider endpoints, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(beat);
        ArgumentNullException.ThrowIfNull(endpoints);
        var now = time.GetUtcNow();
        if (_sent.TryGetValue(beat.EdgeId, out var last) && now - last < Every)
        {
            return;
        }

        var active = await registry.ActiveEventAsync(cancellationToken).ConfigureAwait(false);
        if (active is null || active.Version == beat.PlacementVersion)
        {
            return;
        }

        _sent[beat.EdgeId] = now;
        var endpoint = await endpoints.GetSendEndpoint(EdgeQueueNames.ControlAddress(beat.EdgeId)).ConfigureAwait(false);
        await endpoint.Send(active, s => s.TimeToLive = Every, cancellationToken).ConfigureAwait(false);
    }
}
