using DanceMoE.Placement;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>
/// The simulator's <see cref="LatencyModel"/> calibrated from a replay run: expert time from the experts run here, the
/// emulated link plus what the bus adds per call and per byte, and the bytes a send really carries. It models what a
/// placement adds to a request beyond its home cost (every expert local, measured here), which is added back.
/// </summary>
internal sealed class ReplayLatencyModel
{
    private const long WireRow = 2048L * sizeof(float);
    private static readonly MoeModel Nominal = MoeModel.DeepSeekV2Lite;
    private readonly ReplayBenchmarkSettings _settings;
    private readonly List<ServerSpec> _servers;
    private readonly HomeCosts _home;
    private readonly LatencyOptions _latency;
    private readonly ExpertPlacement _allLocal;

    public ReplayLatencyModel(ReplayBenchmarkSettings settings, IReadOnlyList<ServerSpec> servers, HomeCosts home, LatencyOptions latency)
    {
        _settings = settings;
        _home = home;
        _latency = latency;

        // One expert call is a + b x rows here: the model's max(bytes / bandwidth, rows x FLOPs / speed) with these speeds.
        _servers = [.. servers.Select(s => s with
        {
            MemoryBytesPerSecond = Nominal.ExpertBytes[0] / home.ExpertFixedSeconds,
            FlopsPerSecond = Nominal.FlopsPerToken(0, 0) / home.ExpertPerRowSeconds,
        })];
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
    /// Bytes one (token, server) send really carried under <paramref name="placement"/>: the bus sends a float32 row per
    /// (token, expert), the model one hidden state per (token, server).
    /// </summary>
    public double BytesPerSend(ExpertPlacement placement, IReadOnlyList<ReplayOutcome> outcomes)
    {
        var model = For(new BusCosts(0, 0), WireRow).Model;
        var sends = outcomes.Sum(o => model.Evaluate(placement, new Workload([o.Request.Request])).BytesPerToken * o.Request.Request.Tokens / (2.0 * WireRow));
        var measured = outcomes.Sum(o => o.Stats!.RemoteBytes);
        return sends > 0 && measured > 0 ? measured / (2.0 * sends) : WireRow;
    }

    /// <summary>A request's modelled latency and decode time, in ms.</summary>
    public (double TotalMs, double DecodeMs) Latency(ExpertPlacement placement, ReplayedRequest request, BusCosts bus, double bytesPerSend) =>
        Latency(For(bus, bytesPerSend), placement, request);

    /// <summary>The bus costs that fit <paramref name="outcomes"/>' measured latencies best (least squares), from <paramref name="start"/>.</summary>
    public BusCosts Fit(ExpertPlacement placement, IReadOnlyList<ReplayOutcome> outcomes, double bytesPerSend, BusCosts start)
    {
        if (outcomes.Count == 0)
        {
            return start;
        }

        double Error(BusCosts bus)
        {
            var model = For(bus, bytesPerSend);
            return outcomes.Sum(o => Math.Pow(Latency(model, placement, o.Request).TotalMs - o.LatencyMs, 2));
        }

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

    /// <summary>The emulated links are per pair and run in parallel: the model's links are them, plus the bus's cost per call.</summary>
    private (LatencyModel Model, double SecondsPerByte) For(BusCosts bus, double bytesPerSend)
    {
        var rtt = (2 * _settings.LinkDelayMs / 1e3) + bus.SecondsPerCall;
        var link = LinkSpec.FromMbps(_settings.LinkMbps, rtt * 1e3);
        return (new LatencyModel(Nominal with { HiddenBytes = (long)Math.Round(bytesPerSend) }, Cluster.FullMesh(_servers, link), _latency), bus.SecondsPerByte);
    }

    /// <summary>
    /// What the bus does per byte (copying, encoding, the broker) is CPU work the processes share on this machine: it is
    /// charged once per byte a request sends, not per link in parallel as the model's links are.
    /// </summary>
    private (double TotalMs, double DecodeMs) Latency((LatencyModel Model, double SecondsPerByte) model, ExpertPlacement placement, ReplayedRequest request)
    {
        var workload = new Workload([request.Request]);
        var placed = model.Model.Evaluate(placement, workload);
        var local = model.Model.Evaluate(_allLocal, workload);
        var (homeMs, homeDecodeMs) = _home.Requests[request];
        var bytesMs = placed.BytesPerToken * request.Request.Tokens * model.SecondsPerByte * 1e3;
        return (homeMs + placed.LatencyMsMean - local.LatencyMsMean + bytesMs,
            homeDecodeMs + ((placed.DecodeMsPerToken - local.DecodeMsPerToken) * request.Decode) + (bytesMs * request.Decode / request.Request.Tokens));
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
