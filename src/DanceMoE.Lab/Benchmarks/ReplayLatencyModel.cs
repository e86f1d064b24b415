using System.Globalization;
using DanceMoE.Placement;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>
/// The simulator's <see cref="LatencyModel"/> calibrated from a replay run: expert time from the experts run here, the
/// emulated links, and what the bus adds per message and per byte on this one host (<see cref="LatencyOptions.SharedHostBus"/>
/// over its cores), fitted to the run. It models what a placement adds to a request beyond its home cost (every expert
/// local, measured here), which is added back. The placements are planned with the same model (<see cref="Options"/>).
/// </summary>
internal sealed class ReplayLatencyModel
{
    private const long WireRow = 2048L * sizeof(float);

    /// <summary>The cores the edges, the broker and the benchmark share: the run's processes are all on this machine.</summary>
    public static readonly int Cores = Environment.ProcessorCount;
    private static readonly MoeModel Nominal = MoeModel.DeepSeekV2Lite;
    private readonly HomeCosts _home;
    private readonly bool _sharedHost;
    private readonly MoeModel _wireModel = Nominal with { HiddenBytes = WireRow };
    private readonly Cluster _cluster;
    private readonly LatencyOptions _latency;
    private readonly LatencyModel _model;
    private readonly ExpertPlacement _allLocal;
    private readonly Dictionary<BusCosts, LatencyModel> _withBus = [];

    public ReplayLatencyModel(ReplayBenchmarkSettings settings, IReadOnlyList<ServerSpec> servers, HomeCosts home, LatencyOptions latency, bool sharedHost = true)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(latency);
        _home = home;
        _sharedHost = sharedHost;

        // One expert call is a + b x rows here: the model's max(bytes / bandwidth, rows x FLOPs / speed) with these speeds.
        var calibrated = servers.Select(s => s with
        {
            MemoryBytesPerSecond = Nominal.ExpertBytes[0] / home.ExpertFixedSeconds,
            FlopsPerSecond = Nominal.FlopsPerToken(0, 0) / home.ExpertPerRowSeconds,
        }).ToList();
        _cluster = Cluster.FullMesh(calibrated, LinkSpec.FromMbps(settings.LinkMbps, 2 * settings.LinkDelayMs));
        _latency = Options(latency, new BusCosts(0, 0));
        _model = new LatencyModel(_wireModel, _cluster, _latency);
        _allLocal = new ExpertPlacement(servers.Count, Nominal.Layers, Nominal.Experts);
        for (var s = 0; s < servers.Count; s++)
        {
            for (var l = 0; l < Nominal.Layers; l++)
            {
                for (var e = 0; e < Nominal.Experts; e++)
                {
                    _allLocal.Add(s, l, e);
                }
            }
        }
    }

    /// <summary>
    /// <paramref name="problem"/> as this model sees it: the experts' measured speeds, the emulated links and this
    /// machine's bus (<paramref name="bus"/> on its shared cores), so that a planner plans with the model that predicts
    /// the run. Budgets and history are kept.
    /// </summary>
    public PlacementProblem Calibrated(PlacementProblem problem, BusCosts bus)
    {
        ArgumentNullException.ThrowIfNull(problem);
        var servers = _cluster.Servers.Select((s, i) => s with { MemoryBytes = problem.Cluster.Servers[i].MemoryBytes }).ToList();
        return problem with
        {
            Model = problem.Model with { HiddenBytes = _wireModel.HiddenBytes },
            Cluster = Cluster.FullMesh(servers, _cluster.Link(0, 1)),
            Latency = Options(_latency, bus),
        };
    }

    /// <summary>The latency options of this machine's bus: its work per message and per byte, on the host's shared cores.</summary>
    public LatencyOptions Options(LatencyOptions latency, BusCosts bus)
    {
        ArgumentNullException.ThrowIfNull(latency);
        ArgumentNullException.ThrowIfNull(bus);
        return latency with
        {
            MessageSeconds = bus.SecondsPerCall, MessageByteSeconds = bus.SecondsPerByte, MessageByteSquaredSeconds = bus.SecondsPerByteSquared, MessageLanes = Cores,
            SharedHostBus = _sharedHost,
        };
    }

    /// <summary>The bus's costs in the units the output prints.</summary>
    public static string Describe(BusCosts bus)
    {
        ArgumentNullException.ThrowIfNull(bus);
        return string.Create(CultureInfo.InvariantCulture,
            $"{bus.SecondsPerCall * 1e3:F2} ms per message, {bus.SecondsPerByte * 1e9:F2} ms per MB, {bus.SecondsPerByteSquared * 1e15:F3} ms per MB per MB of the message");
    }

    /// <summary>
    /// What the bus carries for <paramref name="request"/> under <paramref name="placement"/>, routed as the model routes it
    /// (<see cref="LatencyModel.Messages"/>): per step (the prompt, then each decoded position) and layer, one message per
    /// peer that runs any of the step's remote experts, with each token's hidden state once per peer and one output row
    /// back per (token, expert).
    /// </summary>
    public WireCosts Wire(ExpertPlacement placement, ReplayedRequest request)
    {
        ArgumentNullException.ThrowIfNull(placement);
        ArgumentNullException.ThrowIfNull(request);
        var steps = _model.Messages(placement, request.Request)
            .Select(m => new WireStep(m.Decode, [.. m.RowsTo.Where(r => r > 0).Select(r => r * WireRow)]))
            .ToList();
        return new WireCosts(
            steps.Sum(s => (long)s.BytesPerPeer.Length),
            steps.Sum(s => s.BytesPerPeer.Sum()),
            steps.Where(s => s.Decode).Sum(s => (long)s.BytesPerPeer.Length),
            steps.Where(s => s.Decode).Sum(s => s.BytesPerPeer.Sum())) { Steps = steps };
    }

    /// <summary>A request's modelled latency and decode time, in ms: its home cost and what the placement adds, the bus's work included.</summary>
    public (double TotalMs, double DecodeMs) Latency(ExpertPlacement placement, ReplayedRequest request, BusCosts bus)
    {
        ArgumentNullException.ThrowIfNull(placement);
        ArgumentNullException.ThrowIfNull(request);
        if (!_withBus.TryGetValue(bus, out var model))
        {
            model = _withBus[bus] = new LatencyModel(_wireModel, _cluster, Options(_latency, bus));
        }

        var workload = new Workload([request.Request]);
        var placed = model.Evaluate(placement, workload);
        var local = _model.Evaluate(_allLocal, workload);
        var (homeMs, homeDecodeMs) = _home.Requests[request];
        return (homeMs + placed.LatencyMsMean - local.LatencyMsMean,
            request.Decode == 0 ? 0 : homeDecodeMs + ((placed.DecodeMsPerToken - local.DecodeMsPerToken) * request.Decode));
    }

    /// <summary>
    /// The bus costs that fit <paramref name="outcomes"/>' measured prompts and decodes best (least squares over both
    /// phases of every request), from <paramref name="start"/>. A decode sends many messages of a few rows and a prompt a
    /// few of many rows, so the two phases pin the cost per message and the cost per byte apart, which one total per
    /// request does not (both grow with its tokens); prompts of different lengths pin how the cost per byte grows with a
    /// message's size.
    /// </summary>
    public BusCosts Fit(ExpertPlacement placement, IReadOnlyList<ReplayOutcome> outcomes, BusCosts start)
    {
        ArgumentNullException.ThrowIfNull(outcomes);
        if (outcomes.Count == 0)
        {
            return start;
        }

        var measured = outcomes.Select(o => (o.Request, PromptMs: o.Stats!.TtftMs, DecodeMs: o.LatencyMs - o.Stats.TtftMs)).ToList();
        double[] Residuals(BusCosts bus) => [.. measured.SelectMany(m =>
        {
            var (total, decode) = Latency(placement, m.Request, bus);
            return new[] { total - decode - m.PromptMs, decode - m.DecodeMs };
        })];
        double Error(BusCosts bus) => Residuals(bus).Sum(r => r * r);

        // One pass of one cost at a time over its whole range finds the valley; the three costs together then find its
        // bottom (one at a time stops short: all three grow a prompt's time).
        var perCall = start with { SecondsPerCall = Minimise(x => Error(start with { SecondsPerCall = x }), 0, 0.05) };
        var perByte = perCall with { SecondsPerByte = Minimise(x => Error(perCall with { SecondsPerByte = x }), 0, 200e-9) };
        var best = perByte with { SecondsPerByteSquared = Minimise(x => Error(perByte with { SecondsPerByteSquared = x }), 0, 20e-15) };
        var joint = BoundedLeastSquares.Minimise(
            x => Residuals(new BusCosts(x[0], x[1], x[2])), [best.SecondsPerCall, best.SecondsPerByte, best.SecondsPerByteSquared], [1e-3, 1e-9, 1e-15]);
        best = new BusCosts(joint[0], joint[1], joint[2]);

        _withBus.Clear();
        return best;
    }

    /// <summary>Golden-section search for the minimum of a unimodal function on [lo, hi].</summary>
    private static double Minimise(Func<double, double> f, double lo, double hi)
    {
        var ratio = (Math.Sqrt(5) - 1) / 2;
        var a = hi - (ratio * (hi - lo));
        var b = lo + (ratio * (hi - lo));
        var (fa, fb) = (f(a), f(b));
        for (var i = 0; i < 30; i++)
        {
            if (fa < fb)
            {
                (hi, b, fb) = (b, a, fa);
                a = hi - (ratio * (hi - lo));
                fa = f(a);
            }
            else
            {
                (lo, a, fa) = (a, b, fb);
                b = lo + (ratio * (hi - lo));
                fb = f(b);
            }
        }

        return (lo + hi) / 2;
    }
}

/// <summary>
/// What a request sends over the bus: messages and bytes both ways, in all and in its decode steps.
/// </summary>
public sealed record WireCosts(long Messages, long Bytes, long DecodeMessages, long DecodeBytes)
{
    /// <summary>Each step's layer: whether it decodes one position, and the bytes of its message to each peer it needs (both ways).</summary>
    public IReadOnlyList<WireStep> Steps { get; init; } = [];
}

/// <summary>One step's layer on the wire: whether it decodes one position, and the bytes of each of its messages (both ways).</summary>
public sealed record WireStep(bool Decode, long[] BytesPerPeer);
