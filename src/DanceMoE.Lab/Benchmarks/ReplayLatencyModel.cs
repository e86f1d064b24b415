using DanceMoE.Placement;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>
/// The simulator's <see cref="LatencyModel"/> calibrated from a replay run: expert time from the experts run here, the
/// emulated links, and what the bus adds per message and per byte for the messages and bytes the edges' wire format needs
/// (<see cref="Wire"/>). It models what a placement adds to a request beyond its home cost (every expert local, measured
/// here), which is added back.
/// </summary>
internal sealed class ReplayLatencyModel
{
    private const long WireRow = 2048L * sizeof(float);

    /// <summary>The cores the edges, the broker and the benchmark share: the run's processes are all on this machine.</summary>
    public static readonly int Cores = Environment.ProcessorCount;
    private static readonly MoeModel Nominal = MoeModel.DeepSeekV2Lite;
    private readonly HomeCosts _home;
    private readonly LatencyModel _model;
    private readonly ExpertPlacement _allLocal;

    public ReplayLatencyModel(ReplayBenchmarkSettings settings, IReadOnlyList<ServerSpec> servers, HomeCosts home, LatencyOptions latency)
    {
        _home = home;

        // One expert call is a + b x rows here: the model's max(bytes / bandwidth, rows x FLOPs / speed) with these speeds.
        var calibrated = servers.Select(s => s with
        {
            MemoryBytesPerSecond = Nominal.ExpertBytes[0] / home.ExpertFixedSeconds,
            FlopsPerSecond = Nominal.FlopsPerToken(0, 0) / home.ExpertPerRowSeconds,
        }).ToList();
        // The bus's own work is charged by Latency below, with costs fitted to the run.
        _model = new LatencyModel(
            Nominal with { HiddenBytes = WireRow }, Cluster.FullMesh(calibrated, LinkSpec.FromMbps(settings.LinkMbps, 2 * settings.LinkDelayMs)), latency with { MessageSeconds = 0, MessageByteSeconds = 0 });
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

    /// <summary>A request's modelled latency and decode time, in ms.</summary>
    public (double TotalMs, double DecodeMs) Latency(ExpertPlacement placement, ReplayedRequest request, BusCosts bus) =>
        Latency(Parts(placement, request), bus);

    /// <summary>The bus costs that fit <paramref name="outcomes"/>' measured latencies best (least squares), from <paramref name="start"/>.</summary>
    public BusCosts Fit(ExpertPlacement placement, IReadOnlyList<ReplayOutcome> outcomes, BusCosts start)
    {
        if (outcomes.Count == 0)
        {
            return start;
        }

        var parts = outcomes.Select(o => (Parts: Parts(placement, o.Request), o.LatencyMs)).ToList();
        double Error(BusCosts bus) => parts.Sum(p => Math.Pow(Latency(p.Parts, bus).TotalMs - p.LatencyMs, 2));

        var best = start;
        for (var round = 0; round < 3; round++)
        {
            var current = best;
            best = current with { SecondsPerCall = Minimise(x => Error(current with { SecondsPerCall = x }), 0, 0.05) };
            current = best;
            best = current with { SecondsPerByte = Minimise(x => Error(current with { SecondsPerByte = x }), 0, 200e-9) };
        }

        return best;
    }

    /// <summary>
    /// What a request costs beyond the bus's own work: its home cost (every expert local, measured), plus what the
    /// placement adds per the model (the emulated links, per pair and in parallel, and the experts where they run), and the
    /// wire it needs.
    /// </summary>
    private RequestParts Parts(ExpertPlacement placement, ReplayedRequest request)
    {
        var workload = new Workload([request.Request]);
        var placed = _model.Evaluate(placement, workload);
        var local = _model.Evaluate(_allLocal, workload);
        var (homeMs, homeDecodeMs) = _home.Requests[request];
        return new RequestParts(
            homeMs + placed.LatencyMsMean - local.LatencyMsMean,
            homeDecodeMs + ((placed.DecodeMsPerToken - local.DecodeMsPerToken) * request.Decode),
            request.Decode,
            Wire(placement, request));
    }

    /// <summary>
    /// What the bus does for a message (serialising, the broker, the peer's consumer, the answer back) is CPU work done one
    /// step after another, so a step's layer waits for its largest message; and all of the step's messages share this
    /// machine's cores. A step's layer costs the larger of the two.
    /// </summary>
    private static (double TotalMs, double DecodeMs) Latency(RequestParts parts, BusCosts bus)
    {
        var busSeconds = 0.0;
        var decodeBusSeconds = 0.0;
        foreach (var step in parts.Wire.Steps)
        {
            var work = default(StepBusWork);
            foreach (var bytes in step.BytesPerPeer)
            {
                work.Add(bus.SecondsPerCall + (bytes * bus.SecondsPerByte));
            }

            var seconds = work.Seconds(Cores);
            busSeconds += seconds;
            decodeBusSeconds += step.Decode ? seconds : 0;
        }

        return (parts.TotalMs + (busSeconds * 1e3), parts.Decode == 0 ? 0 : parts.DecodeMs + (decodeBusSeconds * 1e3));
    }

    private sealed record RequestParts(double TotalMs, double DecodeMs, int Decode, WireCosts Wire);

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
