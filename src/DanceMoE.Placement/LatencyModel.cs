namespace DanceMoE.Placement;

/// <summary>How requests are run in the latency model.</summary>
public sealed record LatencyOptions
{
    /// <summary>The last this-many tokens of a request are decoded one by one; the rest is its prompt.</summary>
    public int DecodeTokens { get; init; } = 64;

    /// <summary>Mean seconds between requests arriving at each server (Poisson), used for queueing only.</summary>
    public double RequestIntervalSeconds { get; init; } = 10;

    /// <summary>
    /// What the bus adds to one message (an expert batch and its answer) beyond its link: serialising, the broker, the
    /// peer's consumer. The default, 1.6 ms, is the expert-batch round trip of <c>./dancemoe bench cluster --json</c>
    /// without links (1.64 ms, README "bench cluster").
    /// </summary>
    public double MessageSeconds { get; init; } = 1.6e-3;

    /// <summary>What the bus adds per byte a message carries (both ways), beyond its link: 0 unless measured (bench replay fits it).</summary>
    public double MessageByteSeconds { get; init; }

    /// <summary>
    /// What the bus adds per byte a message carries per byte of that message: its work per byte grows with its size (on
    /// bench replay's host a prompt's messages of many MB cost more per byte than small ones: each of their copies
    /// outgrows the caches). 0 unless measured (bench replay fits it).
    /// </summary>
    public double MessageByteSquaredSeconds { get; init; }

    /// <summary>
    /// How many messages' bus work runs at once: a step's bus work is the larger of its largest message's (each message's
    /// work is serial) and all its messages' over the lanes.
    /// </summary>
    public int MessageLanes { get; init; } = 1;

    /// <summary>
    /// Whether every server's bus work runs on one host's <see cref="MessageLanes"/> cores (bench replay's testbed): a
    /// message's work then runs while the step's other messages wait out their links, so the step ends at the later of its
    /// slowest path (link, experts, the message's own work) and all its messages' work over the lanes (see
    /// <see cref="StepBusWork"/>). False (the default): servers of their own, the work after the slowest link.
    /// </summary>
    public bool SharedHostBus { get; init; }

    /// <summary>
    /// The bus's work for one call to a peer, a batch of <paramref name="sentBytes"/> and its answer of
    /// <paramref name="answerBytes"/>: one rule for every model of a step. They are two messages: each one's work per byte
    /// grows with its own size.
    /// </summary>
    public double CallWorkSeconds(double sentBytes, double answerBytes) =>
        MessageSeconds + ((sentBytes + answerBytes) * MessageByteSeconds) + (((sentBytes * sentBytes) + (answerBytes * answerBytes)) * MessageByteSquaredSeconds);

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

/// <summary>One step of one layer on the bus: whether it decodes one token, and the rows of its message to each server (0: none).</summary>
public sealed record StepMessages(int Layer, bool Decode, int[] RowsTo);

/// <summary>
/// The request latency model. Assumptions (also in the README):
/// <list type="bullet">
/// <item>Only the routed-expert part of a layer is modelled: attention, router and shared experts run on the home
/// server under every placement alike and are left out.</item>
/// <item>Prefill runs the prompt as one batch per layer; decode runs one token per step; layers run in sequence.</item>
/// <item>Per step and layer, as the edges send it: the home server computes its local experts while, in parallel, every
/// peer it needs is sent one message (RTT/2 + bytes/bandwidth) with each token's hidden state once, computes its experts
/// one after another, and answers one row per (token, expert) (RTT/2 + bytes/bandwidth): a (token, peer) costs
/// (1 + k) rows of <see cref="MoeModel.HiddenBytes"/>, k the token's experts there, or 2 when the peer runs all of the
/// token's experts (it answers their weighted sum, one row), and a peer's rows of a step share its link one after another. The layer ends when the slowest of these ends.</item>
/// <item>The bus's own work per message, per byte and per byte squared (<see cref="LatencyOptions.MessageSeconds"/>,
/// <see cref="LatencyOptions.MessageByteSeconds"/>, <see cref="LatencyOptions.MessageByteSquaredSeconds"/>; a call is two messages, the batch and its answer, each squared
/// on its own size) is on the
/// step's path: the larger of the largest message's work and all the step's messages' work over
/// <see cref="LatencyOptions.MessageLanes"/>, after the slowest link, or on one shared host each message's work after its
/// own link (<see cref="LatencyOptions.SharedHostBus"/>); fewer messages (a token's experts together, layers whole) are
/// faster, and rows spread over several peers share the lanes.</item>
/// <item>One expert's time on a server is max(weight bytes / memory bandwidth, tokens x FLOPs / compute): decode is
/// memory bound, big prefill batches compute bound; experts of one batch run one after another on a GPU.</item>
/// <item>Each remote expert of a step goes to one replica, chosen as the edges' replica planner does: so that the
/// slowest peer of the step is as fast as possible.</item>
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
    private readonly double[] _linkPerRow;
    private readonly double[] _decodeExpertSeconds;
    private readonly int[] _rowsTo;
    private readonly int[] _rowsBack;
    private readonly int[] _expertTokens;
    private readonly int[] _touched;
    private readonly int[] _remoteRows;
    private readonly int[] _remoteExperts;
    private readonly int[] _replicaCount;
    private readonly int[] _routeOrder;
    private readonly int[] _serverOf;
    private readonly Comparison<int> _routeComparison;

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
        _linkPerRow = new double[n * n];
        for (var a = 0; a < n; a++)
        {
            for (var b = 0; b < n; b++)
            {
                var link = cluster.Link(a, b);
                _linkFixed[(a * n) + b] = link.RttSeconds;
                _linkPerRow[(a * n) + b] = model.HiddenBytes / link.BytesPerSecond;
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
        _rowsTo = new int[n];
        _rowsBack = new int[n];
        _expertTokens = new int[n * model.Experts];
        _touched = new int[n * model.Experts];
        _remoteRows = new int[model.Experts];
        _remoteExperts = new int[model.Experts];
        _replicaCount = new int[model.Experts];
        _routeOrder = new int[model.Experts];
        _serverOf = new int[model.Experts];
        _routeComparison = RouteOrder;
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

    /// <summary>The mean latency in ms of <paramref name="workload"/> without queueing: one pass, for comparing layouts quickly.</summary>
    internal double MeanLatencyMsWithoutQueueing(ExpertPlacement placement, Workload workload)
    {
        Array.Clear(QueueWaitSeconds);
        var latencies = Run(placement, workload, new Stats(), null);
        return latencies.Length == 0 ? 0 : latencies.Average() * 1e3;
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

    /// <summary>
    /// What the bus carries for <paramref name="request"/> under <paramref name="placement"/>, as the model routes it:
    /// per layer and step (the prompt, then each decoded token), the rows of the message to each server (0: none).
    /// </summary>
    public IReadOnlyList<StepMessages> Messages(ExpertPlacement placement, TraceRequest request)
    {
        ArgumentNullException.ThrowIfNull(placement);
        ArgumentNullException.ThrowIfNull(request);
        var (prompt, _) = _options.Split(request.Tokens);
        var k = _model.TopK;
        var steps = new List<StepMessages>();
        var stats = new Stats();
        for (var l = 0; l < _model.Layers; l++)
        {
            for (var from = 0; from < request.Tokens; from = from < prompt ? prompt : from + 1)
            {
                var count = from < prompt ? prompt : 1;
                var touched = Route(placement, request.Server, l, request.Experts[l].AsSpan(from * k, count * k), count, stats);
                for (var i = 0; i < touched; i++)
                {
                    _expertTokens[_touched[i]] = 0;
                }

                steps.Add(new StepMessages(l, from >= prompt, (int[])_rowsTo.Clone()));
            }
        }

        return steps;
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
        var seconds = Step(placement, request.Server, layer, experts.AsSpan(0, prompt * k), prompt, stats, load);
        var decodeSeconds = 0.0;
        for (var t = prompt; t < request.Tokens; t++)
        {
            var remoteBefore = stats.Remote;
            decodeSeconds += Step(placement, request.Server, layer, experts.AsSpan(t * k, k), 1, stats, load);
            stats.DecodeSteps++;
            if (stats.Remote > remoteBefore)
            {
                stats.RemoteDecodeSteps++;
            }
        }

        stats.DecodeSeconds += decodeSeconds;
        if (layer == 0)
        {
            stats.DecodeTokens += decode;
        }

        return seconds + decodeSeconds;
    }

    /// <summary>
    /// One step of one layer as the edges run it (<see cref="Messages"/>): the home server's experts while each peer
    /// is sent one message with the rows it needs, and the layer waits for the slowest.
    /// </summary>
    private double Step(ExpertPlacement placement, int home, int layer, ReadOnlySpan<int> tokens, int count, Stats stats, LoadStats? load)
    {
        if (count == 0)
        {
            return 0;
        }

        var n = _cluster.Count;
        var e0 = _model.Experts;
        var touched = Route(placement, home, layer, tokens, count, stats);
        Span<double> compute = stackalloc double[n];
        for (var i = 0; i < touched; i++)
        {
            var slot = _touched[i];
            var s = slot / e0;
            compute[s] += _expertTokens[slot] == 1 ? DecodeSeconds(s, layer, slot % e0) : ExpertSeconds(s, layer, slot % e0, _expertTokens[slot]);
            _expertTokens[slot] = 0;
        }

        if (load is not null)
        {
            load.Busy[(home * n) + home] += compute[home];
        }

        var bus = default(StepBusWork);
        bus.Add(0, compute[home]);
        for (var s = 0; s < n; s++)
        {
            if (_rowsTo[s] == 0)
            {
                continue;
            }

            stats.Bytes += _rowsTo[s] * (double)_model.HiddenBytes;
            if (load is not null)
            {
                load.Busy[(home * n) + s] += compute[s];
                load.Calls[s]++;
                load.CallSeconds[s] += compute[s];
            }

            bus.AddCall(_options, _rowsTo[s] - _rowsBack[s], _rowsBack[s], _model.HiddenBytes, _linkFixed[(home * n) + s], _linkPerRow[(home * n) + s], compute[s], QueueWaitSeconds[s]);
        }

        return bus.StepSeconds(_options.MessageLanes, _options.SharedHostBus);
    }

    /// <summary>
    /// Routes one step's experts as the edges do: the home server's own locally, each other one to a replica chosen so
    /// that the slowest peer is as fast as possible (experts with one replica first, then by most rows; ties to the
    /// replica whose own cost stays lowest, then one already used, then the lower index). Fills _rowsTo (per peer: each
    /// token's hidden state once, one output row per (token, expert) or one per token whose experts are all there) and the touched (server, expert) token counts.
    /// </summary>
    private int Route(ExpertPlacement placement, int home, int layer, ReadOnlySpan<int> tokens, int count, Stats stats)
    {
        var n = _cluster.Count;
        var k = _model.TopK;
        var touched = 0;
        Array.Clear(_rowsTo);
        Array.Clear(_rowsBack);
        var homeBits = placement.LayerBits(home, layer);
        var remote = 0;
        for (var i = 0; i < count * k; i++)
        {
            var e = tokens[i];
            if ((homeBits[e >> 6] & (1UL << (e & 63))) != 0)
            {
                Touch(home, e, ref touched);
                stats.Local++;
            }
            else
            {
                if (_remoteRows[e]++ == 0)
                {
                    _remoteExperts[remote++] = e;
                }

                stats.Remote++;
            }
        }

        if (remote == 0)
        {
            return touched;
        }

        for (var i = 0; i < remote; i++)
        {
            var e = _remoteExperts[i];
            var replicas = 0;
            for (var s = 0; s < n; s++)
            {
                if (s != home && placement.Holds(s, layer, e))
                {
                    replicas++;
                }
            }

            _replicaCount[i] = replicas == 0 ? throw new InvalidOperationException($"layer {layer}: expert {e} is on no server") : replicas;
        }

        var order = _routeOrder.AsSpan(0, remote);
        for (var i = 0; i < remote; i++)
        {
            order[i] = i;
        }

        if (remote > 1)
        {
            order.Sort(_routeComparison);
        }

        Span<double> cost = stackalloc double[n];
        Span<bool> used = stackalloc bool[n];
        foreach (var i in order)
        {
            var e = _remoteExperts[i];
            var holders = 0UL;
            for (var s = 0; s < n; s++)
            {
                holders |= placement.Holds(s, layer, e) ? 1UL << s : 0;
            }

            _serverOf[e] = ReplicaChoice.Pick(holders, home, _remoteRows[e], _linkFixed, _linkPerRow, cost, used);
        }

        // Rows per peer: each token's hidden state once per peer it needs, and one output row per (token, expert), or
        // one row for the token when the peer runs all of its experts (it answers their weighted sum).
        Span<int> there = stackalloc int[n];
        for (var t = 0; t < count; t++)
        {
            there.Clear();
            var peers = 0;
            var last = -1;
            foreach (var e in tokens.Slice(t * k, k))
            {
                if (_remoteRows[e] == 0)
                {
                    continue;
                }

                var s = _serverOf[e];
                Touch(s, e, ref touched);
                peers += there[s]++ == 0 ? 1 : 0;
                last = s;
            }

            if (peers == 1 && there[last] == k)
            {
                _rowsTo[last] += 2;
                _rowsBack[last]++;
                continue;
            }

            for (var s = 0; s < n; s++)
            {
                _rowsTo[s] += there[s] == 0 ? 0 : there[s] + 1;
                _rowsBack[s] += there[s];
            }
        }

        for (var i = 0; i < remote; i++)
        {
            _remoteRows[_remoteExperts[i]] = 0;
        }

        return touched;
    }

    /// <summary>Experts with one replica first, then those with most rows, then by id.</summary>
    private int RouteOrder(int a, int b)
    {
        var single = (_replicaCount[a] == 1 ? 0 : 1).CompareTo(_replicaCount[b] == 1 ? 0 : 1);
        if (single != 0)
        {
            return single;
        }

        var rows = _remoteRows[_remoteExperts[b]].CompareTo(_remoteRows[_remoteExperts[a]]);
        return rows != 0 ? rows : _remoteExperts[a].CompareTo(_remoteExperts[b]);
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
