using System.Collections.Concurrent;
using System.Diagnostics;
using DanceMoE.Contracts;
using DanceMoE.Hosting;
using DanceMoE.Inference;
using MassTransit;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DanceMoE.Edge;

/// <summary>
/// Runs a layer's experts where they live: held experts on this edge's sessions, the others as ONE
/// <see cref="RunExpertBatch"/> per remote edge, all awaited in parallel with a deadline. A batch that
/// times out or faults is retried once on other replicas; then the request fails with a clear error.
/// Each batch's result says which edge served it; the request's costs are counted in its <see cref="ForwardContext"/>.
/// </summary>
public sealed class DistributedExpertDispatcher(
    IOptions<EdgeOptions> options,
    ExpertStore store,
    IRoutingTable routing,
    IClientFactory clients,
    LinkEmulator link,
    EdgeMetrics metrics,
    ILogger<DistributedExpertDispatcher> logger) : IExpertDispatcher
{
    private static readonly TimeSpan SuspectFor = TimeSpan.FromSeconds(30);
    private readonly ConcurrentDictionary<string, DateTime> _suspects = new(StringComparer.Ordinal);
    private readonly string _edgeId = options.Value.Id;
    private readonly int _deadlineMs = options.Value.ExpertDeadlineMs;
    private readonly int _maxBatchBytes = options.Value.MaxBatchBytes;

    public async ValueTask<DispatchResult> RunAsync(int layer, IReadOnlyList<ExpertBatch> batches, ForwardContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batches);
        ArgumentNullException.ThrowIfNull(context);
        var outputs = new float[batches.Count][];
        var servedBy = new string[batches.Count];
        var placement = routing.Current;
        var local = new List<int>();
        var remote = new Dictionary<string, List<int>>(StringComparer.Ordinal);
        var countActivations = metrics.ExpertActivationsEnabled;
        for (var i = 0; i < batches.Count; i++)
        {
            if (countActivations)
            {
                metrics.ExpertActivated(layer, batches[i].Expert, batches[i].Rows);
            }

            if (store.Holds(layer, batches[i].Expert))
            {
                local.Add(i);
                continue;
            }

            var server = ChooseReplica(placement, layer, batches[i].Expert, exclude: null)
                ?? throw new ExpertUnavailableException($"no edge holds expert {layer}.{batches[i].Expert} in placement v{placement.Version}");
            if (!remote.TryGetValue(server, out var list))
            {
                list = [];
                remote.Add(server, list);
            }

            list.Add(i);
        }

        var pending = remote.Select(kv => RunRemoteAsync(kv.Key, layer, kv.Value, batches, outputs, servedBy, context, cancellationToken)).ToList();
        var unloaded = new List<int>();
        foreach (var i in local)
        {
            if (TryRunHere(layer, batches[i], context, out var output))
            {
                outputs[i] = output;
                servedBy[i] = _edgeId;
            }
            else
            {
                // Unloaded by a migration since the routing decision: another replica serves it.
                unloaded.Add(i);
            }
        }

        // The placement that made this edge unload them already routes elsewhere: ask the newest one.
        var latest = routing.Current;
        foreach (var group in unloaded.GroupBy(i => ChooseReplica(latest, layer, batches[i].Expert, exclude: null)
            ?? throw new ExpertUnavailableException($"expert {layer}.{batches[i].Expert} was unloaded here and placement v{latest.Version} has no other replica")))
        {
            pending.Add(RunRemoteAsync(group.Key, layer, [.. group], batches, outputs, servedBy, context, cancellationToken));
        }

        await Task.WhenAll(pending).ConfigureAwait(false);
        return new DispatchResult(outputs, servedBy, placement.Version);
    }

    private async Task RunRemoteAsync(
        string server, int layer, List<int> indexes, IReadOnlyList<ExpertBatch> batches, float[][] outputs, string[] servedBy, ForwardContext context, CancellationToken cancellationToken)
    {
        try
        {
            await SendAsync(server, layer, indexes, batches, outputs, servedBy, context, cancellationToken).ConfigureAwait(false);
            return;
        }
        catch (Exception ex) when (ex is RequestTimeoutException or RequestFaultException or InvalidExpertResultException && !cancellationToken.IsCancellationRequested)
        {
            _suspects[server] = DateTime.UtcNow;
            logger.LogWarning("expert batch for layer {Layer} on {Server} failed ({Reason}); retrying on other replicas", layer, server, Describe(ex));
            context.AddRetry();

            // The newest placement: a migration may have moved the expert since the batch was sent (the source unloads it
            // after a drain, and a batch that waited longer in its queue is refused there).
            var placement = routing.Current;
            var retry = new Dictionary<string, List<int>>(StringComparer.Ordinal);
            foreach (var i in indexes)
            {
                if (TryRunHere(layer, batches[i], context, out var output))
                {
                    outputs[i] = output;
                    servedBy[i] = _edgeId;
                    continue;
                }

                var other = ChooseReplica(placement, layer, batches[i].Expert, exclude: server)
                    ?? throw new ExpertUnavailableException(
                        $"expert {layer}.{batches[i].Expert} failed on {server} ({Describe(ex)}) and placement v{placement.Version} has no other replica", ex);
                if (!retry.TryGetValue(other, out var list))
                {
                    list = [];
                    retry.Add(other, list);
                }

                list.Add(i);
            }

            try
            {
                await Task.WhenAll(retry.Select(kv => SendAsync(kv.Key, layer, kv.Value, batches, outputs, servedBy, context, cancellationToken))).ConfigureAwait(false);
            }
            catch (Exception retryEx) when (retryEx is RequestTimeoutException or RequestFaultException or InvalidExpertResultException && !cancellationToken.IsCancellationRequested)
            {
                throw new ExpertUnavailableException(
                    $"layer {layer} experts failed on {server} ({Describe(ex)}) and again on {string.Join(", ", retry.Keys)} ({Describe(retryEx)})", retryEx);
            }
        }
    }

    private async Task SendAsync(
        string server, int layer, List<int> indexes, IReadOnlyList<ExpertBatch> batches, float[][] outputs, string[] servedBy, ForwardContext context, CancellationToken cancellationToken)
    {
        var hidden = store.Manifest.Architecture.HiddenSize;
        var slices = indexes.Select(i => new ExpertSlice { Expert = batches[i].Expert, Rows = batches[i].Rows }).ToList();
        var totalRows = slices.Sum(s => s.Rows);
        var floats = new float[totalRows * hidden];
        var offset = 0;
        foreach (var i in indexes)
        {
            batches[i].Input.CopyTo(floats, offset);
            offset += batches[i].Input.Length;
        }

        var payload = TensorBytes.FromFloats(floats);
        if (payload.Length > _maxBatchBytes)
        {
            throw new ExpertUnavailableException($"expert batch of {payload.Length} bytes for {server} exceeds the limit of {_maxBatchBytes} bytes");
        }

        var request = new RunExpertBatch
        {
            BatchId = NewId.NextGuid(),
            RequestId = context.RequestId,
            OriginEdgeId = _edgeId,
            Layer = layer,
            HiddenSize = hidden,
            Slices = slices,
            Hidden = payload,
        };
        await link.TransmitAsync(payload.Length, cancellationToken).ConfigureAwait(false);
        var client = clients.CreateRequestClient<RunExpertBatch>(EdgeQueues.ExpertsAddress(server), RequestTimeout.After(ms: _deadlineMs));
        var sentAt = Stopwatch.GetTimestamp();
        var response = await client.GetResponse<ExpertBatchResult>(request, cancellationToken).ConfigureAwait(false);
        metrics.PeerRoundTrip(server, Stopwatch.GetElapsedTime(sentAt));
        var result = response.Message;
        if (result.BatchId != request.BatchId || result.Output.Length != payload.Length
            || !result.Slices.Select(s => (s.Expert, s.Rows)).SequenceEqual(slices.Select(s => (s.Expert, s.Rows))))
        {
            throw new InvalidExpertResultException($"{server} answered batch {request.BatchId} with a result that does not match it");
        }

        var y = TensorBytes.ToFloats(result.Output);
        offset = 0;
        foreach (var i in indexes)
        {
            outputs[i] = y.AsSpan(offset, batches[i].Input.Length).ToArray();
            servedBy[i] = server;
            offset += batches[i].Input.Length;
        }

        context.AddRemote(indexes.Count, payload.Length + result.Output.Length);
    }

    /// <summary>Runs the expert on this edge if it holds it now (a migration may have loaded or unloaded it since routing).</summary>
    private bool TryRunHere(int layer, ExpertBatch batch, ForwardContext context, out float[] output)
    {
        output = [];
        if (!store.Holds(layer, batch.Expert))
        {
            return false;
        }

        try
        {
            output = store.Run(layer, batch.Expert, batch.Input, batch.Rows);
            context.AddLocal(1);
            return true;
        }
        catch (ExpertNotHeldException)
        {
            return false;
        }
    }

    /// <summary>The first replica in placement order that is not excluded, preferring edges that have not failed lately.</summary>
    private string? ChooseReplica(EdgePlacement placement, int layer, int expert, string? exclude)
    {
        var candidates = placement.ServersOf(layer, expert)
            .Where(s => !string.Equals(s, _edgeId, StringComparison.Ordinal) && !string.Equals(s, exclude, StringComparison.Ordinal))
            .ToList();
        var now = DateTime.UtcNow;
        return candidates.FirstOrDefault(s => !_suspects.TryGetValue(s, out var at) || now - at > SuspectFor)
            ?? candidates.FirstOrDefault();
    }

    private static string Describe(Exception ex) => ex switch
    {
        RequestTimeoutException => "no answer within the deadline",
        RequestFaultException fault => fault.Fault?.Exceptions.FirstOrDefault()?.Message ?? fault.Message,
        _ => ex.Message,
    };
}

/// <summary>An expert could not be run anywhere: the request fails with this message.</summary>
public sealed class ExpertUnavailableException(string message, Exception? inner = null) : Exception(message, inner);

public sealed class InvalidExpertResultException(string message) : Exception(message);
