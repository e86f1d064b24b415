using DanceMoE.Coordinator;
using System.Diagnostics;
using System.Text;
using DanceMoE.Contracts;
using DanceMoE.Edge;
using DanceMoE.Hosting;
using DanceMoE.Inference;
using DanceMoE.Model;
using DanceMoE.Model.Locality;
using DanceMoE.Operations;
using DanceMoE.Placement;
using MassTransit;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>
/// The workloads of <c>bench shift</c>: one domain of the model's held-out text per edge. The first bytes of each
/// domain's sample are the history the initial placement is computed from; prompts come from the rest (history vs future).
/// </summary>
internal static class ShiftWorkload
{
    /// <summary>Routing counts [domain][layer][expert] of the first <paramref name="historyBytes"/> of each domain, one token per activation.</summary>
    public static async Task<double[][][]> HistoryCountsAsync(
        ModelManifest manifest, string checkpoint, IReadOnlyList<string> domains, int historyBytes, CancellationToken cancellationToken)
    {
        var c = manifest.Architecture;
        var tokenizer = manifest.Tokenizer is { } t ? new ByteTokenizer(t.BosTokenId, t.EosTokenId) : ByteTokenizer.Default;
        var factory = new SessionFactory(new InferenceOptions { Provider = ExecutionProvider.Cpu, IntraOpThreads = 1, InterOpThreads = 1 });
        using var pool = new ExpertSessionPool(manifest, factory);
        var counts = domains.Select(_ => Enumerable.Range(0, c.RoutedLayers).Select(_ => new double[c.NumExperts]).ToArray()).ToArray();
        using var forward = new MoeForward(manifest, factory, new LocalExpertDispatcher(pool));
        var window = c.MaxPositions - 1;
        for (var domain = 0; domain < domains.Count; domain++)
        {
            var bytes = HeldOutTrace.Sample(checkpoint, domains[domain], historyBytes);
            for (var start = 0; start < bytes.Length; start += window)
            {
                var slice = bytes.AsSpan(start, Math.Min(window, bytes.Length - start));
                var ids = new List<int>(slice.Length + 1) { tokenizer.BosTokenId };
                foreach (var b in slice)
                {
                    ids.Add(b);
                }

                var routed = new ForwardContext(recordRouting: true);
                await forward.ForwardAsync(ids, forward.NewState(), routed, cancellationToken).ConfigureAwait(false);
                foreach (var decision in routed.Decisions)
                {
                    foreach (var choice in decision.Choices)
                    {
                        counts[domain][decision.Layer][choice.Expert]++;
                    }
                }
            }
        }

        return counts;
    }

    /// <summary>
    /// The placement the coordinator's default algorithm (<c>dancemoe</c>) gives workload A (edge i serves domain i) from
    /// the history counts, for edges of <paramref name="budgetBytes"/> each, as the edges' bootstrap placement file.
    /// </summary>
    public static EdgePlacement InitialPlacement(ModelManifest manifest, double[][][] counts, IReadOnlyList<string> edges, long budgetBytes)
    {
        var c = manifest.Architecture;
        var model = ModelShape.Of(manifest).ToMoeModel();
        var cluster = Cluster.FullMesh([.. edges.Select(e => ServerSpec.Edge(e, budgetBytes))], LinkSpec.FromMbps(500, 2));
        var activations = new ActivationCounts(edges.Count, c.RoutedLayers, c.NumExperts);
        for (var n = 0; n < edges.Count; n++)
        {
            for (var l = 0; l < c.RoutedLayers; l++)
            {
                for (var e = 0; e < c.NumExperts; e++)
                {
                    activations[n, l, e] = counts[n][l][e];
                }
            }
        }

        ExpertPlacement placement;
        try
        {
            placement = new DanceMoePlacement().Place(new PlacementProblem(model, cluster, activations));
        }
        catch (InfeasiblePlacementException ex)
        {
            throw new OperationException($"no placement of {c.RoutedLayers * c.NumExperts} experts fits {edges.Count} edges of {budgetBytes >> 20} MiB: {ex.Message} (raise --memory-mb)", OperationFailure.InvalidSettings, ex);
        }

        return new EdgePlacement(1, PlacementAssignments.From(placement, edges));
    }

    /// <summary>Prompts of at most <paramref name="promptBytes"/> UTF-8 bytes from a domain's sample after its history, each starting at a line.</summary>
    public static IReadOnlyList<string> Prompts(string checkpoint, string domain, int historyBytes, int promptBytes, int max)
    {
        var bytes = HeldOutTrace.Sample(checkpoint, domain, 0);
        var text = Encoding.UTF8.GetString(bytes, Math.Min(historyBytes, bytes.Length), bytes.Length - Math.Min(historyBytes, bytes.Length));
        var prompts = new List<string>();
        var position = historyBytes > 0 ? text.IndexOf('\n', StringComparison.Ordinal) + 1 : 0;
        while (position < text.Length && prompts.Count < max)
        {
            var end = position;
            var used = 0;
            foreach (var rune in text.AsSpan(position).EnumerateRunes())
            {
                if (used + rune.Utf8SequenceLength > promptBytes)
                {
                    break;
                }

                used += rune.Utf8SequenceLength;
                end += rune.Utf16SequenceLength;
            }

            if (end == position)
            {
                break;
            }

            // End at a line break when one is in the second half; otherwise at the byte limit.
            var cut = end < text.Length ? text.LastIndexOf('\n', end - 1, end - position) : -1;
            cut = cut > position + ((end - position) / 2) ? cut : end;
            var prompt = text[position..cut];
            if (prompt.Count(ch => !char.IsWhiteSpace(ch)) >= promptBytes / 4 && !prompt.Contains('\uFFFD', StringComparison.Ordinal))
            {
                prompts.Add(prompt);
            }

            position = cut < text.Length && text[cut] == '\n' ? cut + 1 : cut;
        }

        return prompts.Count > 0 ? prompts : throw new OperationException($"{checkpoint}: the {domain} sample has no text after its first {historyBytes} bytes for prompts");
    }
}

/// <summary>One request of the client load: the phase it was sent in, where it went, and what came back (or why not).</summary>
internal sealed record RequestOutcome(
    string Phase, int Edge, string Domain, DateTimeOffset SentAt, DateTimeOffset DoneAt, string? Error, long Local, long Remote, double LatencyMs, int Tokens, int PlacementVersion)
{
    public bool Ok => Error is null;

    public double MsPerToken => LatencyMs / Math.Max(1, Tokens);
}

/// <summary>
/// Continuous client load: one loop per edge, each sending its next request as soon as the last one answered, never
/// pausing. Edge i asks domain (i + shift) mod domains; each request is filed under the phase current when it was sent.
/// A fault or a timeout is recorded as a failed request, never dropped.
/// </summary>
internal sealed class ShiftLoad(
    RequestChannel requests, IReadOnlyList<string> edges, IReadOnlyList<string> domains, IReadOnlyList<IReadOnlyList<string>> prompts, int maxTokens, TimeSpan timeout, Action<string> log)
{
    private readonly object _gate = new();
    private readonly List<RequestOutcome> _outcomes = [];
    private readonly List<Task> _workers = [];
    private string _phase = ShiftBenchmark.WarmupPhase;
    private int _shift;
    private volatile bool _stopping;

    /// <summary>From now on, requests are filed under <paramref name="phase"/> and edge i asks domain i + <paramref name="shift"/>.</summary>
    public void Set(string phase, int shift)
    {
        lock (_gate)
        {
            _phase = phase;
            _shift = shift;
        }
    }

    public void Start(CancellationToken cancellationToken)
    {
        for (var i = 0; i < edges.Count; i++)
        {
            var edge = i;
            _workers.Add(Task.Run(() => WorkAsync(edge, cancellationToken), CancellationToken.None));
        }
    }

    public IReadOnlyList<RequestOutcome> Outcomes()
    {
        lock (_gate)
        {
            return [.. _outcomes];
        }
    }

    /// <summary>The fewest requests any edge has finished (answered or failed) among those sent in <paramref name="phase"/>.</summary>
    public int MinDone(string phase, DateTimeOffset? sentSince = null)
    {
        lock (_gate)
        {
            return Enumerable.Range(0, edges.Count)
                .Min(e => _outcomes.Count(o => o.Edge == e && o.Phase == phase && (sentSince is null || o.SentAt >= sentSince)));
        }
    }

    /// <summary>Lets every loop finish the request it has in flight, then stop.</summary>
    public async Task StopAsync()
    {
        _stopping = true;
        await Task.WhenAll(_workers).ConfigureAwait(false);
    }

    private async Task WorkAsync(int edge, CancellationToken cancellationToken)
    {
        var address = EdgeQueues.RequestsAddress(edges[edge]);
        var sent = 0;
        while (!_stopping && !cancellationToken.IsCancellationRequested)
        {
            string phase;
            int domain;
            lock (_gate)
            {
                phase = _phase;
                domain = (edge + _shift) % domains.Count;
            }

            var list = prompts[domain];
            var prompt = list[((edge * list.Count / edges.Count) + sent++) % list.Count];
            var sentAt = DateTimeOffset.UtcNow;
            var clock = Stopwatch.StartNew();
            RequestOutcome outcome;
            try
            {
                var response = await requests.GetResponse<GenerateText, TextGenerated>(
                    address,
                    new GenerateText { RequestId = NewId.NextGuid(), Prompt = prompt, MaxNewTokens = maxTokens, WorkloadTag = $"bench-shift-{domains[domain]}" },
                    RequestTimeout.After(ms: (int)timeout.TotalMilliseconds),
                    cancellationToken).ConfigureAwait(false);
                var s = response.Message.Stats;
                outcome = new RequestOutcome(phase, edge, domains[domain], sentAt, DateTimeOffset.UtcNow, null, s.LocalExpertCalls, s.RemoteExpertCalls, s.LatencyMs,
                    response.Message.TokenIds.Count, s.PlacementVersion);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                // Whatever went wrong (a fault, a timeout, the broker), the request failed and counts as failed.
                var reason = ex is RequestFaultException fault ? fault.Fault?.Exceptions.FirstOrDefault()?.Message ?? ex.Message : ex.Message;
                outcome = new RequestOutcome(phase, edge, domains[domain], sentAt, DateTimeOffset.UtcNow, $"{ex.GetType().Name}: {reason}", 0, 0,
                    clock.Elapsed.TotalMilliseconds, 0, 0);
                log($"{edges[edge]}: request ({phase}, {domains[domain]}) FAILED after {clock.Elapsed.TotalSeconds:F1} s: {outcome.Error}");
            }

            lock (_gate)
            {
                _outcomes.Add(outcome);
            }
        }
    }
}
