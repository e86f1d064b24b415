using System.Collections.Concurrent;
using DanceMoE.Contracts;
using DanceMoE.Hosting;
using MassTransit;

namespace DanceMoE.Coordinator;

/// <summary>
/// Sends the active placement to an edge whose heartbeat says it routes by another one: an edge that (re)started from
/// its bootstrap file, or missed the event while it was down. At most once per edge every few seconds, and only when
/// the live edges hold every expert of it: a placement whose replicas are on edges that are gone (an earlier cluster's,
/// for example) would make the edge route to nobody, while its own bootstrap placement still serves.
/// </summary>
public sealed class LaggingEdgeConsumer(
    PlacementRegistry registry, ClusterMembership membership, LaggingEdgeConsumer.SentLog sent, OutageLog<LaggingEdgeConsumer> outage, TimeProvider time)
    : IConsumer<EdgeHeartbeat>
{
    private static readonly TimeSpan Every = TimeSpan.FromSeconds(5);

    private const string Work = "reading the active placement for lagging edges";

    public async Task Consume(ConsumeContext<EdgeHeartbeat> context)
    {
        var beat = context.Message;
        var now = time.GetUtcNow();
        if (HeartbeatCheck.Problem(beat, now) is not null)
        {
            return;
        }

        if (sent.At.TryGetValue(beat.EdgeId, out var last) && now - last < Every)
        {
            return;
        }

        RegisteredPlacement? active;
        try
        {
            active = await registry.GetActiveAsync(context.CancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (OutageLog.IsDatabaseFailure(ex))
        {
            // The edge's next heartbeat asks again.
            outage.Failed(Work, ex);
            return;
        }

        outage.Succeeded(Work);
        if (active is null || active.Version == beat.PlacementVersion)
        {
            return;
        }

        var live = membership.Alive(now).Select(e => e.EdgeId).Append(beat.EdgeId).ToHashSet(StringComparer.Ordinal);
        if (!IsServedBy(active.Assignments, live))
        {
            return;
        }

        sent.At[beat.EdgeId] = now;
        var endpoint = await context.GetSendEndpoint(EdgeQueues.ControlAddress(beat.EdgeId)).ConfigureAwait(false);
        await endpoint.Send(active.ToEvent(), s => s.TimeToLive = Every, context.CancellationToken).ConfigureAwait(false);
    }

    /// <summary>Whether every expert of the placement has a replica on one of the <paramref name="live"/> edges.</summary>
    public static bool IsServedBy(IReadOnlyList<ExpertAssignment> assignments, IReadOnlySet<string> live)
    {
        ArgumentNullException.ThrowIfNull(assignments);
        ArgumentNullException.ThrowIfNull(live);
        return assignments.All(a => a.Servers.Any(live.Contains));
    }

    /// <summary>When each edge was last sent the active placement (a singleton: consumers live for one message).</summary>
    public sealed class SentLog
    {
        public ConcurrentDictionary<string, DateTimeOffset> At { get; } = new(StringComparer.Ordinal);
    }
}

/// <summary>Its own subscription to the heartbeats, beside the membership's.</summary>
public sealed class LaggingEdgeConsumerDefinition : ConsumerDefinition<LaggingEdgeConsumer>
{
    public LaggingEdgeConsumerDefinition()
    {
        EndpointName = "coordinator-lagging-edges";
        ConcurrentMessageLimit = 1;
    }

    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpointConfigurator,
        IConsumerConfigurator<LaggingEdgeConsumer> consumerConfigurator, IRegistrationContext context) =>
        endpointConfigurator.UseTransientQueue();
}
