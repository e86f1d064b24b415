using System.Collections.Concurrent;
using System.Diagnostics;
using DanceMoE.Contracts;
using DanceMoE.Inference;
using MassTransit;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DanceMoE.Edge;

/// <summary>
/// Runs a layer's experts where they live: held experts on this edge's sessions, the others as ONE
/// <see cref="RunExpertBatch"/> per remote edge on the <see cref="ExpertLane"/>, all awaited in parallel with a deadline. A batch that
/// times out or faults is retried once on other replicas; then the request fails with a clear error.
/// Each batch's result says which edge served it; the request's costs are counted in its <see cref="ForwardContext"/>.
/// </summary>
public sealed class DistributedExpertDispatcher(
    IOptions<EdgeOptions> options,
    ExpertStore store,
    IRoutingTable routing,
    ExpertLane lane,
    LinkEmulator link,
    EdgeMetrics metrics,
    PeerEstimates estimates,
    ILogger<DistributedExpertDispatcher> logger) : IExpertDispatcher
{
    private readonly string _edgeId = options.Value.Id;
    private readonly TimeSpan _deadline = TimeSpan.FromMilliseconds(options.Value.ExpertDeadlineMs);
    private readonly int _maxBatchBytes = options.Value.MaxBatchBytes;

    public async ValueTask<DispatchResult> RunAsync(int layer, IReadOnlyList<ExpertBatch> batches, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batches);
        var step = new Step(batches);
        var placement = routing.Current;
        var local = new List<int>();
        var elsewhere = new List<int>();
        var countActivations = metrics.ExpertActivationsEnabled;
        for (var i = 0; i < batches.Count; i++)
        {
            if (countActivations)
            {
                metrics.ExpertActivated(layer, batches[i].Expert, batches[i].Rows);
            }

            (store.Holds(layer, batches[i].Expert) ? local : elsewhere).Add(i);
        }

        var remote = Plan(placement, layer, elsewhere, step, exclude: null,
            i => $"no edge holds expert {layer}.{batches[i].Expert} in placement v{placement.Version}");

        var pending = remote.Select(kv => RunRemoteAsync(kv.Key, layer, kv.Value, step, cancellationToken)).ToList();
        var unloaded = new List<int>();
        foreach (var i in local)
        {
            if (!TryRunHere(layer, i, step))
            {
                // Unloaded by a migration since the routing decision: another replica serves it.
                unloaded.Add(i);
            }
        }

        // The placement that made this edge unload them already routes elsewhere: ask the newest one.
        var latest = routing.Current;
        var moved = Plan(latest, layer, unloaded, step, exclude: null,
            i => $"expert {layer}.{batches[i].Expert} was unloaded here and placement v{latest.Version} has no other replica");

        pending.AddRange(moved.Select(kv => RunRemoteAsync(kv.Key, layer, kv.Value, step, cancellationToken)));
        await Task.WhenAll(pending).ConfigureAwait(false);
        return new DispatchResult(step.Outputs, step.ServedBy, placement.Version) { Failures = step.Failures, TokenSums = step.Sums };
    }

    /// <summary>
    /// Picks a replica for each batch so that the step's slowest peer is as fast as the estimates allow
    /// (<see cref="ReplicaPlanner"/>), grouped by peer; a batch with no replica fails with <paramref name="unavailable"/>.
    /// </summary>
    private Dictionary<string, List<int>> Plan(EdgePlacement placement, int layer, List<int> indexes, Step step, string? exclude, Func<int, string> unavailable)
    {
        var groups = new Dictionary<string, List<int>>(StringComparer.Ordinal);
        if (indexes.Count == 0)
        {
            return groups;
        }

        var chosen = ReplicaPlanner.Choose(placement, layer, indexes.Select(i => new ExpertDemand(step.Batches[i].Expert, step.Batches[i].Rows)), _edgeId, exclude, estimates);
        foreach (var i in indexes)
        {
            if (!chosen.TryGetValue(step.Batches[i].Expert, out var server))
            {
                step.Fail(i, new ExpertUnavailableException(unavailable(i)));
                continue;
            }

            if (!groups.TryGetValue(server, out var list))
            {
                list = [];
                groups.Add(server, list);
            }

            list.Add(i);
        }

        return groups;
    }

    /// <summary>
    /// Sends one peer its batches; if it times out or faults, retries each batch once on another replica (or here,
    /// if a migration has loaded it since). Batches that cannot be run anywhere fail only their requests.
    /// </summary>
    private async Task RunRemoteAsync(string server, int layer, List<int> indexes, Step step, CancellationToken cancellationToken)
    {
        Exception failure;
        try
        {
            await SendAsync(server, layer, indexes, step, cancellationToken).ConfigureAwait(false);
            return;
        }
        catch (Exception ex) when (IsPeerFailure(ex) && !cancellationToken.IsCancellationRequested)
        {
            failure = ex;
        }

        PeerFailed(server);
        logger.LogWarning("expert batch for layer {Layer} on {Server} failed ({Reason}); retrying on other replicas", layer, server, Describe(failure));
        foreach (var request in indexes.SelectMany(i => step.Batches[i].Requests).Distinct())
        {
            request.AddRetry();
        }

        // The newest placement: a migration may have moved the expert since the batch was sent (the source unloads it
        // after a drain, and a batch that waited longer in its queue is refused there).
        var placement = routing.Current;
        var retry = Plan(placement, layer, [.. indexes.Where(i => !TryRunHere(layer, i, step))], step, exclude: server,
            i => $"expert {layer}.{step.Batches[i].Expert} failed on {server} ({Describe(failure)}) and placement v{placement.Version} has no other replica");

        await Task.WhenAll(retry.Select(async kv =>
        {
            try
            {
                await SendAsync(kv.Key, layer, kv.Value, step, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception retryEx) when (IsPeerFailure(retryEx) && !cancellationToken.IsCancellationRequested)
            {
                PeerFailed(kv.Key);
                foreach (var i in kv.Value)
                {
                    step.Fail(i, new ExpertUnavailableException(
                        $"layer {layer} expert {step.Batches[i].Expert} failed on {server} ({Describe(failure)}) and again on {kv.Key} ({Describe(retryEx)})", retryEx));
                }
            }
        })).ConfigureAwait(false);
    }

    // A transport fault (a broker node going down under the send) fails the batch, not the whole step: it is retried
    // on another replica like a peer that did not answer.
    private static bool IsPeerFailure(Exception ex) =>
        ex is RequestTimeoutException or ExpertLaneException or RequestFaultException or InvalidExpertResultException or ExpertUnavailableException or TransportException;

    // Avoided until it answers again, and counted where operators see it.
    private void PeerFailed(string server)
    {
        estimates.Failed(server);
        metrics.PeerBatchFailed(server);
    }

    private async Task SendAsync(string server, int layer, List<int> indexes, Step step, CancellationToken cancellationToken)
    {
        var batches = step.Batches;
        var hidden = store.Manifest.Architecture.HiddenSize;
        var message = Pack(step, indexes, hidden);
        var outputBytes = (long)message.RowsBack * hidden * sizeof(float);
        if (Math.Max(message.Payload.Length, outputBytes) > _maxBatchBytes)
        {
            throw new ExpertUnavailableException($"expert batch of {Math.Max(message.Payload.Length, outputBytes)} bytes for {server} exceeds the limit of {_maxBatchBytes} bytes");
        }

        // Each request's expert calls and rows in this message: what it is charged for the message.
        var shares = new Dictionary<ForwardContext, (int Experts, int Rows)>();
        var totalRows = 0;
        foreach (var i in message.Indexes)
        {
            totalRows += batches[i].Rows;
            foreach (var owner in batches[i].Requests)
            {
                shares[owner] = (shares.GetValueOrDefault(owner).Experts + 1, shares.GetValueOrDefault(owner).Rows);
            }

            foreach (var owner in batches[i].RowOwners)
            {
                shares[owner] = (shares[owner].Experts, shares[owner].Rows + 1);
            }
        }

        var request = new RunExpertBatch
        {
            BatchId = NewId.NextGuid(),
            RequestId = shares.Count == 1 ? shares.Keys.First().RequestId : Guid.Empty,
            OriginEdgeId = _edgeId,
            Layer = layer,
            HiddenSize = hidden,
            Slices = message.Slices,
            Hidden = message.Payload,
            SumRows = message.SumRows,
        };
        await link.TransmitAsync(message.Payload.Length, cancellationToken).ConfigureAwait(false);
        var sentAt = Stopwatch.GetTimestamp();
        var result = await lane.CallAsync(server, request, _deadline, cancellationToken).ConfigureAwait(false);
        var roundTrip = Stopwatch.GetElapsedTime(sentAt);
        metrics.PeerRoundTrip(server, roundTrip);
        estimates.Observe(server, roundTrip);
        estimates.ObserveQueueDepth(server, result.QueueDepth);
        if (result.BatchId != request.BatchId || result.Output.Length != outputBytes
            || !result.Slices.Select(s => (s.Expert, s.Rows)).SequenceEqual(message.Slices.Select(s => (s.Expert, s.Rows))))
        {
            throw new InvalidExpertResultException($"{server} answered batch {request.BatchId} with a result that does not match it");
        }

        // Each slice's rows but those of summed tokens (left zero: the token's sum replaces them), then the sums.
        var offset = 0;
        var rowBytes = hidden * sizeof(float);
        foreach (var i in message.Indexes)
        {
            var batch = batches[i];
            var output = new float[batch.Input.Length];
            for (var r = 0; r < batch.Rows; r++)
            {
                if (message.Summed.Count == 0 || !message.Summed.Contains(batch.StepTokens[r]))
                {
                    offset += TensorBytes.Read(result.Output.AsSpan(offset, rowBytes), output.AsSpan(r * hidden));
                }
            }

            step.Complete(i, output, server);
        }

        foreach (var token in message.SumTokens)
        {
            step.Sums[token] = TensorBytes.ToFloats(result.Output.AsSpan(offset, rowBytes));
            offset += rowBytes;
        }

        var bytes = message.Payload.Length + result.Output.Length;
        foreach (var (owner, (experts, rows)) in shares)
        {
            var share = (double)rows / totalRows;
            owner.AddRemote(experts, (long)Math.Round(bytes * share), share);
        }
    }

    /// <summary>
    /// One message to a peer: its batches in expert order, each token's hidden state once (the same token in several of
    /// the peer's experts is one row), for each slice the payload rows of its own rows, and the tokens whose experts are
    /// all in this message summed by the peer (one row back for each instead of one per expert).
    /// </summary>
    private static PeerMessage Pack(Step step, List<int> indexes, int hidden)
    {
        var batches = step.Batches;
        List<int> ordered = [.. indexes.OrderBy(i => batches[i].Expert)];
        var rowOf = new Dictionary<long, int>();
        var sources = new List<(int Batch, int Row)>();
        var slices = new List<ExpertSlice>(ordered.Count);
        var here = new Dictionary<int, int>();
        foreach (var i in ordered)
        {
            var batch = batches[i];
            var tokenRows = new int[batch.Rows];
            for (var r = 0; r < batch.Rows; r++)
            {
                // Without token ids a row is its own token: a key no other batch's row can have.
                var token = batch.StepTokens.Count > 0 ? batch.StepTokens[r] : -(((long)i << 32) | (uint)r) - 1;
                if (!rowOf.TryGetValue(token, out var row))
                {
                    row = sources.Count;
                    rowOf.Add(token, row);
                    sources.Add((i, r));
                }

                tokenRows[r] = row;
                if (step.CanSum)
                {
                    here[(int)token] = here.GetValueOrDefault((int)token) + 1;
                }
            }

            slices.Add(new ExpertSlice { Expert = batch.Expert, Rows = batch.Rows, TokenRows = tokenRows });
        }

        List<int> sumTokens = [.. here.Where(kv => kv.Value == step.ExpertsOf[kv.Key]).Select(kv => kv.Key).OrderBy(t => rowOf[t])];
        if (sumTokens.Count > 0)
        {
            for (var s = 0; s < slices.Count; s++)
            {
                slices[s] = slices[s] with { Weights = batches[ordered[s]].Weights };
            }
        }

        var payload = new byte[(long)sources.Count * hidden * sizeof(float)];
        var offset = 0;
        foreach (var (b, r) in sources)
        {
            offset += TensorBytes.Write(batches[b].Input.AsSpan(r * hidden, hidden), payload.AsSpan(offset));
        }

        var rows = ordered.Sum(i => batches[i].Rows);
        var summed = sumTokens.ToHashSet();
        var summedRows = sumTokens.Sum(t => step.ExpertsOf[t]);
        return new PeerMessage(ordered, slices, payload, [.. sumTokens.Select(t => rowOf[t])], sumTokens, summed, rows - summedRows + sumTokens.Count);
    }

    /// <summary>What <see cref="Pack"/> puts in one message, and how many rows its answer has.</summary>
    private sealed record PeerMessage(
        List<int> Indexes, List<ExpertSlice> Slices, byte[] Payload, List<int> SumRows, List<int> SumTokens, HashSet<int> Summed, int RowsBack);

    /// <summary>Runs the expert on this edge if it holds it now (a migration may have loaded or unloaded it since routing).</summary>
    private bool TryRunHere(int layer, int index, Step step)
    {
        var batch = step.Batches[index];
        if (!store.Holds(layer, batch.Expert))
        {
            return false;
        }

        try
        {
            step.Complete(index, store.Run(layer, batch.Expert, batch.Input, batch.Rows), _edgeId);
        }
        catch (ExpertNotHeldException)
        {
            return false;
        }

        foreach (var request in batch.Requests)
        {
            request.AddLocal(1);
        }

        return true;
    }

    private static string Describe(Exception ex) => ex switch
    {
        RequestTimeoutException => "no answer within the deadline",
        RequestFaultException fault => fault.Fault?.Exceptions.FirstOrDefault()?.Message ?? fault.Message,
        _ => ex.Message,
    };
}

/// <summary>One layer's batches of a step while they run: outputs and servers as they complete, and the batches that failed.</summary>
internal sealed class Step
{
    private readonly ConcurrentDictionary<int, Exception> _failures = new();

    public Step(IReadOnlyList<ExpertBatch> batches)
    {
        Batches = batches;
        Outputs = new float[batches.Count][];
        ServedBy = new string[batches.Count];
        CanSum = batches.Count > 0 && batches.All(b => b.StepTokens.Count == b.Rows && b.Weights.Count == b.Rows);
        if (CanSum)
        {
            foreach (var token in batches.SelectMany(b => b.StepTokens))
            {
                ExpertsOf[token] = ExpertsOf.GetValueOrDefault(token) + 1;
            }
        }
    }

    public IReadOnlyList<ExpertBatch> Batches { get; }

    /// <summary>Whether every batch names its rows' tokens and weights, so a peer may sum a token's experts.</summary>
    public bool CanSum { get; }

    /// <summary>How many of the layer's batches each step token is in (when <see cref="CanSum"/>).</summary>
    public Dictionary<int, int> ExpertsOf { get; } = [];

    /// <summary>The weighted sums peers answered, by step token.</summary>
    public ConcurrentDictionary<int, float[]> Sums { get; } = new();

    public float[]?[] Outputs { get; }

    public string[] ServedBy { get; }

    public IReadOnlyDictionary<int, Exception> Failures => _failures;

    public void Complete(int index, float[] output, string server)
    {
        Outputs[index] = output;
        ServedBy[index] = server;
    }

    public void Fail(int index, Exception error) => _failures.TryAdd(index, error);
}

/// <summary>An expert could not be run anywhere: the request fails with this message.</summary>
public sealed class ExpertUnavailableException(string message, Exception? inner = null) : Exception(message, inner);

public sealed class InvalidExpertResultException(string message) : Exception(message);
