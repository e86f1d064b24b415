using System.Numerics;

namespace DanceMoE.Placement;

/// <summary>How requests are run in the latency model.</summary>
public sealed record LatencyOptions
{
    /// <summary>The last this-many tokens of a request are decoded one by one; the rest is its prompt.</summary>
    public int DecodeTokens { get; init; } = 64;

    /// <summary>Mean seconds between requests arriving at each server (Poisson), used for queueing only.</summary>
    public double RequestIntervalSeconds { get; init; } = 10;

    /// <summary>How a request of <paramref name="tokens"/> tokens splits into prompt and decode (at least one prompt token).</summary>
    public (int Prompt, int Decode) Split(int tokens)
    {
        var decode = Math.Clamp(tokens - 1, 0, DecodeTokens);
        return (tokens - decode, decode);
    }
}

/// <summary>What a placement costs on a workload, per the cost models (a), (b) and (c).</summary>
public sealed record PlacementMetrics(
    double LocalRatio,
    double RemoteCallsPerToken,
    double BytesPerToken,
    double LatencyMsMean,
    double LatencyMsP99,
    double DecodeMsPerToken)
{
    /// <summary>Share of (decode token, layer) steps that needed at least one remote expert, i.e. paid a round trip.</summary>
    public double DecodeRoundTripRatio { get; init; }
}

/// <summary>
/// The request latency model. Assumptions (also in the README):
/// <list type="bullet">
/// <item>Only the routed-expert part of a layer is modelled: attention, router and shared experts run on the home
/// server under every placement alike and are left out.</item>
/// <item>Prefill runs the prompt as one batch per layer; decode runs one token per step; layers run in sequence.</item>
/// <item>Per layer: the home server computes its local experts while, in parallel, every remote server it needs
/// receives the hidden states (RTT/2 + bytes/bandwidth), computes, and sends the results back (RTT/2 + bytes/bandwidth);
/// the layer ends when the slowest of these ends.</item>
/// <item>One expert's time on a server is max(weight bytes / memory bandwidth, tokens x FLOPs / compute): decode is
/// memory bound, big prefill batches compute bound; experts of one batch run one after another on a GPU.</item>
/// <item>A token's remote experts are routed to as few servers as possible (greedy set cover over the replicas, ties
/// to the cheaper link): a hidden state goes once to each server it needs.</item>
/// <item>Links are full duplex and independent per pair of servers; concurrent requests do not share them.</item>
/// <item>Queueing: each server's GPU is an M/D/1 queue fed by all requests (Poisson arrivals at every server); a
/// remote call waits rho / (2 (1 - rho)) x its mean service time. At the default load this is negligible.</item>
/// </list>
/// </summary>
public sealed class LatencyModel
{
    private readonly MoeModel _model;
    private readonly Cluster _cluster;
    private readonly LatencyOptions _options;
    private readonly double[] _linkFixed;
    private readonly double[] _linkPerToken;
    private readonly double[] _decodeExpertSeconds;
    private readonly int[] _tokensTo;
    private readonly int[] _expertTokens;
    private readonly int[] _touched;
    private readonly ulong[] _remoteMask;

    public LatencyModel(MoeModel model, Cluster cluster, LatencyOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(cluster);
        ArgumentNullException.ThrowIfNull(options);
        _model = model;
        _cluster = cluster;
        _options = options;
        var n = cluster.Count;
        _linkFixed = new double[n * n];
        _linkPerToken = new double[n * n];
        for (var a = 0; a < n; a++)
        {
            for (var b = 0; b < n; b++)
            {
                var link = cluster.Link(a, b);
                _linkFixed[(a * n) + b] = link.RttSeconds;
                _linkPerToken[(a * n) + b] = 2.0 * model.HiddenBytes / link.BytesPerSecond;
            }
        }

        _decodeExpertSeconds = new double[n * model.Layers * model.Experts];
        for (var s = 0; s < n; s++)
        {
            for (var l = 0; l < model.Layers; l++)
            {
                for (var e = 0; e < model.Experts; e++)
                {
                    _decodeExpertSeconds[(((s * model.Layers) + l) * model.Experts) + e] = ExpertSeconds(s, l, e, 1);
                }
            }
        }

        QueueWaitSeconds = new double[n];
        _tokensTo = new int[n];
        _expertTokens = new int[n * model.Experts];
        _touched = new int[n * model.Experts];
        _remoteMask = new ulong[(model.Experts + 63) / 64];
    }

    /// <summary>Extra wait of a remote call at each server (queueing); zero until <see cref="Evaluate"/> sets it.</summary>
    internal double[] QueueWaitSeconds { get; }

    public LatencyOptions Options => _options;

    /// <summary>Evaluates a placement on a workload: every cost model, with queueing from the workload's own load.</summary>
    public PlacementMetrics Evaluate(ExpertPlacement placement, Workload workload)
    {
        ArgumentNullException.ThrowIfNull(placement);
        ArgumentNullException.ThrowIfNull(workload);
        Array.Clear(QueueWaitSeconds);
        var load = new LoadStats(_cluster.Count);
        Run(placement, workload, new Stats(), load);
        SetQueueing(workload, load);
        var stats = new Stats();
        var latencies = Run(placement, workload, stats, null);
        Array.Sort(latencies);
        var tokens = Math.Max(1, workload.Tokens);
        var activations = Math.Max(1, stats.Local + stats.Remote);
        return new PlacementMetrics(
            (double)stats.Local / activations,
            (double)stats.Remote / tokens,
            stats.Bytes / tokens,
            latencies.Length == 0 ? 0 : latencies.Average() * 1e3,
            latencies.Length == 0 ? 0 : latencies[Math.Max(0, (int)Math.Ceiling(0.99 * latencies.Length) - 1)] * 1e3,
            stats.DecodeTokens == 0 ? 0 : stats.DecodeSeconds / stats.DecodeTokens * 1e3)
        {
            DecodeRoundTripRatio = stats.DecodeSteps == 0 ? 0 : (double)stats.RemoteDecodeSteps / stats.DecodeSteps,
        };
    }

    /// <summary>Seconds that one layer adds to the requests, summed over them (mean latency = sum over layers / count).</summary>
    internal double LayerSeconds(ExpertPlacement placement, IReadOnlyList<TraceRequest> requests, int layer)
    {
        var total = 0.0;
        var stats = new Stats();
        foreach (var request in requests)
        {
            total += RequestLayer(placement, request, layer, stats, null);
        }

        return total;
    }

    private double[] Run(ExpertPlacement placement, Workload workload, Stats stats, LoadStats? load)
    {
        var latencies = new double[workload.Requests.Count];
        for (var i = 0; i < latencies.Length; i++)
        {
            var request = workload.Requests[i];
            var seconds = 0.0;
            for (var l = 0; l < _model.Layers; l++)
            {
                seconds += RequestLayer(placement, request, l, stats, load);
            }

            latencies[i] = seconds;
        }

        return latencies;
    }

    private void SetQueueing(Workload workload, LoadStats load)
    {
        var perServer = workload.Requests.GroupBy(r => r.Server).ToDictionary(g => g.Key, g => g.Count());
        var rate = 1.0 / _options.RequestIntervalSeconds;
        for (var s = 0; s < _cluster.Count; s++)
        {
            // Busy seconds of s per second: each home server h sends requests at `rate`, each costing s the mean busy time seen in h's sample.
            var rho = 0.0;
            for (var h = 0; h < _cluster.Count; h++)
            {
                if (perServer.TryGetValue(h, out var count))
                {
                    rho += rate * load.Busy[(h * _cluster.Count) + s] / count;
                }
            }

            var meanService = load.Calls[s] == 0 ? 0 : load.CallSeconds[s] / load.Calls[s];
            rho = Math.Min(rho, 0.99);
            QueueWaitSeconds[s] = rho / (2 * (1 - rho)) * meanService;
        }
    }

    private double RequestLayer(ExpertPlacement placement, TraceRequest request, int layer, Stats stats, LoadStats? load)
    {
        var (prompt, decode) = _options.Split(request.Tokens);
        var experts = request.Experts[layer];
        var k = _model.TopK;
        var seconds = Batch(placement, request.Server, layer, experts.AsSpan(0, prompt * k), prompt, stats, load);
        var decodeSeconds = 0.0;
        for (var t = prompt; t < request.Tokens; t++)
        {
            decodeSeconds += DecodeStep(placement, request.Server, layer, experts.AsSpan(t * k, k), stats, load);
        }

        stats.DecodeSeconds += decodeSeconds;
        if (layer == 0)
        {
            stats.DecodeTokens += decode;
        }

        return seconds + decodeSeconds;
    }

    private double DecodeStep(ExpertPlacement placement, int home, int layer, ReadOnlySpan<int> token, Stats stats, LoadStats? load)
    {
        var n = _cluster.Count;
        var local = 0.0;
        var remaining = Split(placement, home, layer, token, ref local);
        stats.Local += token.Length - remaining;
        stats.Remote += remaining;
        stats.DecodeSteps++;
        if (remaining > 0)
        {
            stats.RemoteDecodeSteps++;
        }

        if (load is not null)
        {
            load.Busy[(home * n) + home] += local;
        }

        var slowest = local;
        while (remaining > 0)
        {
            var s = ChooseServer(placement, home, layer);
            var held = placement.LayerBits(s, layer);
            var compute = 0.0;
            foreach (var e in token)
            {
                var bit = 1UL << (e & 63);
                if ((_remoteMask[e >> 6] & held[e >> 6] & bit) != 0)
                {
                    _remoteMask[e >> 6] &= ~bit;
                    remaining--;
                    compute += DecodeSeconds(s, layer, e);
                }
            }

            stats.Bytes += 2.0 * _model.HiddenBytes;
            if (load is not null)
            {
                load.Busy[(home * n) + s] += compute;
                load.Calls[s]++;
                load.CallSeconds[s] += compute;
            }

            slowest = Math.Max(slowest, _linkFixed[(home * n) + s] + _linkPerToken[(home * n) + s] + compute + QueueWaitSeconds[s]);
        }

        return slowest;
    }

    private double Batch(ExpertPlacement placement, int home, int layer, ReadOnlySpan<int> tokens, int count, Stats stats, LoadStats? load)
    {
        if (count == 0)
        {
            return 0;
        }

        var n = _cluster.Count;
        var k = _model.TopK;
        var e0 = _model.Experts;
        var touched = 0;
        Array.Clear(_tokensTo);
        var homeBits = placement.LayerBits(home, layer);
        for (var t = 0; t < count; t++)
        {
            var token = tokens.Slice(t * k, k);
            Array.Clear(_remoteMask);
            var remaining = 0;
            foreach (var e in token)
            {
                if ((homeBits[e >> 6] & (1UL << (e & 63))) != 0)
                {
                    Touch(home, e, ref touched);
                }
                else
                {
                    _remoteMask[e >> 6] |= 1UL << (e & 63);
                    remaining++;
                }
            }

            stats.Local += k - remaining;
            stats.Remote += remaining;
            while (remaining > 0)
            {
                var s = ChooseServer(placement, home, layer);
                var held = placement.LayerBits(s, layer);
                foreach (var e in token)
                {
                    var bit = 1UL << (e & 63);
                    if ((_remoteMask[e >> 6] & held[e >> 6] & bit) != 0)
                    {
                        _remoteMask[e >> 6] &= ~bit;
                        remaining--;
                        Touch(s, e, ref touched);
                    }
                }

                _tokensTo[s]++;
                stats.Bytes += 2.0 * _model.HiddenBytes;
            }
        }

        Span<double> compute = stackalloc double[n];
        for (var i = 0; i < touched; i++)
        {
            var slot = _touched[i];
            var s = slot / e0;
            compute[s] += ExpertSeconds(s, layer, slot % e0, _expertTokens[slot]);
            _expertTokens[slot] = 0;
        }

        var slowest = compute[home];
        if (load is not null)
        {
            load.Busy[(home * n) + home] += compute[home];
        }

        for (var s = 0; s < n; s++)
        {
            if (_tokensTo[s] == 0)
            {
                continue;
            }

            if (load is not null)
            {
                load.Busy[(home * n) + s] += compute[s];
                load.Calls[s]++;
                load.CallSeconds[s] += compute[s];
            }

            slowest = Math.Max(slowest, _linkFixed[(home * n) + s] + (_tokensTo[s] * _linkPerToken[(home * n) + s]) + compute[s] + QueueWaitSeconds[s]);
        }

        return slowest;
    }

    /// <summary>Splits a token into local experts (their decode time added to <paramref name="local"/>) and _remoteMask.</summary>
    private int Split(ExpertPlacement placement, int home, int layer, ReadOnlySpan<int> token, ref double local)
    {
        Array.Clear(_remoteMask);
        var held = placement.LayerBits(home, layer);
        var remaining = 0;
        foreach (var e in token)
        {
            var bit = 1UL << (e & 63);
            if ((held[e >> 6] & bit) != 0)
            {
                local += DecodeSeconds(home, layer, e);
            }
            else
            {
                _remoteMask[e >> 6] |= bit;
                remaining++;
            }
        }

        return remaining;
    }

    /// <summary>
    /// One round of the greedy set cover of the token's remote experts (_remoteMask): the server holding most of them,
    /// ties to the cheaper link, then the lower index.
    /// </summary>
    private int ChooseServer(ExpertPlacement placement, int home, int layer)
    {
        var n = _cluster.Count;
        var best = -1;
        var bestCover = 0;
        var bestCost = double.MaxValue;
        for (var s = 0; s < n; s++)
        {
            if (s == home)
            {
                continue;
            }

            var held = placement.LayerBits(s, layer);
            var cover = 0;
            for (var w = 0; w < _remoteMask.Length; w++)
            {
                cover += BitOperations.PopCount(_remoteMask[w] & held[w]);
            }

            var cost = _linkFixed[(home * n) + s] + _linkPerToken[(home * n) + s];
            if (cover > bestCover || (cover == bestCover && cover > 0 && cost < bestCost))
            {
                best = s;
                bestCover = cover;
                bestCost = cost;
            }
        }

        return best >= 0 ? best : throw new InvalidOperationException($"layer {layer}: an expert of a token is on no server");
    }

    private void Touch(int server, int expert, ref int touched)
    {
        var slot = (server * _model.Experts) + expert;
        if (_expertTokens[slot]++ == 0)
        {
            _touched[touched++] = slot;
        }
    }

    private double DecodeSeconds(int server, int layer, int expert) =>
        _decodeExpertSeconds[(((server * _model.Layers) + layer) * _model.Experts) + expert];

    private double ExpertSeconds(int server, int layer, int expert, int tokens)
    {
        var spec = _cluster.Servers[server];
        return Math.Max(_model.Bytes(layer, expert) / spec.MemoryBytesPerSecond, tokens * _model.FlopsPerToken(layer, expert) / spec.FlopsPerSecond);
    }

    private sealed class Stats
    {
        public long Local { get; set; }

        public long Remote { get; set; }

        public double Bytes { get; set; }

        public double DecodeSeconds { get; set; }

        public long DecodeTokens { get; set; }

        public long DecodeSteps { get; set; }

        public long RemoteDecodeSteps { get; set; }
    }

    private sealed class LoadStats(int servers)
    {
        public double[] Busy { get; } = new double[servers * servers];

        public long[] Calls { get; } = new long[servers];

        public double[] CallSeconds { get; } = new double[servers];
    }
}
