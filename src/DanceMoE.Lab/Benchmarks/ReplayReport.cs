using System.Globalization;
using System.Text;
using DanceMoE.Operations;
using DanceMoE.Placement;
using ScottPlot;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>The calibration of the latency model from one replay run (the same for every algorithm but the wire bytes).</summary>
/// <param name="ExpertMsPerCall">One expert call's fixed time, measured here (a of a + b x rows).</param>
/// <param name="ExpertMsPerRow">One expert call's time per row, measured here (b).</param>
/// <param name="PingMsPerCall">What the bus adds to a call, from concurrent one-row round trips to the edges.</param>
/// <param name="PingMsPerMb">What the bus adds per MB carried (all peers' batches together), from concurrent 256-row round trips.</param>
/// <param name="BusMsPerCall">The per-message cost the model runs with (CPU work the processes share, charged for every message): fitted to <paramref name="FittedOn"/>'s requests.</param>
/// <param name="BusMsPerMb">The per-MB cost the model runs with: fitted to <paramref name="FittedOn"/>'s requests.</param>
/// <param name="FittedOn">The algorithm whose requests the bus costs are fitted to; the others' modelled latencies are predictions.</param>
/// <param name="RowBytes">One hidden-state row on the wire (float32): a (token, peer) costs 1 + k of them, k its experts there.</param>
/// <param name="HomeMsMean">Mean time of a replayed request run here with every expert local.</param>
/// <param name="Cores">The cores the run's processes shared (a step's messages share them; each message's work is serial).</param>
public sealed record ReplayCalibration(
    double ExpertMsPerCall, double ExpertMsPerRow, double PingMsPerCall, double PingMsPerMb, double BusMsPerCall, double BusMsPerMb, string FittedOn,
    double RowBytes, double HomeMsMean, int Cores)
{
    /// <summary>How much the per-MB cost grows per MB of a message: fitted to <see cref="FittedOn"/>'s requests.</summary>
    public double BusMsPerMbPerMb { get; init; }
}

/// <summary>One algorithm's line of <c>bench replay</c>: measured on the edges, and modelled for the same requests.</summary>
public sealed record ReplayRow
{
    public string Algorithm { get; init; } = "";
    public int PlacementVersion { get; init; }
    public int Requests { get; init; }
    public int Failed { get; init; }
    public IReadOnlyList<string> Errors { get; init; } = [];
    public double MeasuredLatencyMsMean { get; init; }
    public double MeasuredLatencyMsP99 { get; init; }

    /// <summary>The mean over every attempt (the measured mean counts each request's fastest).</summary>
    public double MeasuredLatencyMsMeanAllAttempts { get; init; }
    public double MeasuredDecodeMsPerToken { get; init; }
    public double? MeasuredRatioToEplb { get; init; }
    public double ModelledLatencyMsMean { get; init; }
    public double ModelledLatencyMsP99 { get; init; }
    public double ModelledDecodeMsPerToken { get; init; }
    public double? ModelledRatioToEplb { get; init; }

    /// <summary>The median over the requests of this placement's latency over eplb's for the same request: a load burst on one request moves it less than the means.</summary>
    public double? MeasuredRatioToEplbMedian { get; init; }
    public double? ModelledRatioToEplbMedian { get; init; }
    public double LocalRatio { get; init; }
    public double RemoteBatchesPerToken { get; init; }
    public double RemoteBytesPerToken { get; init; }

    /// <summary>The bytes per token the model's wire format gives for the same requests (<see cref="ReplayLatencyModel.Wire"/>).</summary>
    public double ModelledBytesPerToken { get; init; }

    /// <summary>The messages per token the model's wire format gives for the same requests.</summary>
    public double ModelledBatchesPerToken { get; init; }
    public long LocalExpertCalls { get; init; }
    public long RemoteExpertCalls { get; init; }

    /// <summary>The local expert calls the trace and the placement imply (distinct experts per step held by the home edge).</summary>
    public long ExpectedLocalExpertCalls { get; init; }
    public long ExpectedRemoteExpertCalls { get; init; }
    public int Retries { get; init; }
    public double SolveMs { get; init; }
    public double ExpertSizeMb { get; init; }

    /// <summary>Each replayed request, measured and modelled, in the order replayed: where the means come from.</summary>
    public IReadOnlyList<ReplayRequestLatency> RequestLatencies { get; init; } = [];
    public ReplayCalibration Calibration { get; init; } = new(0, 0, 0, 0, 0, 0, "", 0, 0, 0);
}

/// <summary>One replayed request under one placement: its edge, prompt and decode lengths, and its whole and prompt time measured and modelled, in ms.</summary>
public sealed record ReplayRequestLatency(int Server, int Prompt, int Decode, double MeasuredMs, double MeasuredPromptMs, double ModelledMs, double ModelledPromptMs);

internal static class ReplayReport
{
    public static List<ReplayRow> Rows(
        ReplayBenchmarkSettings settings, PlacementSimulation simulation, IReadOnlyList<AlgorithmResult> results, HomeCosts home, EdgeRuns runs, LatencyOptions latency, Action<string> log)
    {
        ArgumentNullException.ThrowIfNull(log);
        var nominal = MoeModel.DeepSeekV2Lite;
        var model = new ReplayLatencyModel(settings, simulation.Problem.Cluster.Servers, home, latency);
        var placements = results.ToDictionary(r => r.Algorithm, r => r.Placement);

        // The bus's costs per call and per byte, fitted to the baseline's requests only (eplb when replayed): the other
        // placements' modelled latencies are predictions, not fits.
        var baseline = results.FirstOrDefault(r => r.Algorithm == PlacementAlgorithms.Eplb) ?? results[0];
        var bus = model.Fit(baseline.Placement, [.. runs.Outcomes[baseline.Algorithm].Where(o => o.Ok)], runs.Bus);
        log(Compared(new ReplayLatencyModel(settings, simulation.Problem.Cluster.Servers, home, latency, sharedHost: false), "a cluster's rule (the bus's work after the slowest link)"));
        log(Compared(model, "this host's rule (each message's work on its own path, all of it over the shared cores)"));
        foreach (var result in results)
        {
            log(Breakdown(result));
        }

        // Where a placement's modelled time goes, per phase: the home edge (dense layers and local experts, measured here), the
        // links and the peers' experts, and the bus's own work; next to what was measured.
        string Breakdown(AlgorithmResult result)
        {
            var ok = runs.Outcomes[result.Algorithm].Where(o => o.Ok).ToList();
            var decodeTokens = Math.Max(1, ok.Sum(o => o.Request.Decode));
            var homes = ok.Select(o => home.Requests[o.Request]).ToList();
            var links = ok.Select(o => model.Latency(result.Placement, o.Request, new BusCosts(0, 0))).ToList();
            var full = ok.Select(o => model.Latency(result.Placement, o.Request, bus)).ToList();
            double Prompt((double TotalMs, double DecodeMs) t) => t.TotalMs - t.DecodeMs;
            var (homePrompt, linkPrompt, fullPrompt) = (homes.Average(Prompt), links.Average(Prompt), full.Average(Prompt));
            var (homeDecode, linkDecode, fullDecode) = (homes.Sum(h => h.DecodeMs) / decodeTokens, links.Sum(l => l.DecodeMs) / decodeTokens, full.Sum(f => f.DecodeMs) / decodeTokens);
            return string.Create(CultureInfo.InvariantCulture,
                $"{result.Algorithm}: prompt {ok.Average(o => o.Stats!.TtftMs):F0} ms measured, modelled {fullPrompt:F0} = home {homePrompt:F0} + links and peers' experts {linkPrompt - homePrompt:F0} + bus {fullPrompt - linkPrompt:F0}; "
                + $"decode {ok.Sum(o => o.LatencyMs - o.Stats!.TtftMs) / decodeTokens:F1} ms/token measured, modelled {fullDecode:F1} = home {homeDecode:F1} + links and peers' experts {linkDecode - homeDecode:F1} + bus {fullDecode - linkDecode:F1}");
        }

        // How a model fitted on the baseline predicts every placement: measured / modelled mean, and the ratios to the baseline's.
        string Compared(ReplayLatencyModel candidate, string rule)
        {
            var fitted = candidate.Fit(baseline.Placement, [.. runs.Outcomes[baseline.Algorithm].Where(o => o.Ok)], runs.Bus);
            var means = results.Select(r =>
            {
                var ok = runs.Outcomes[r.Algorithm].Where(o => o.Ok).ToList();
                return (r.Algorithm, Measured: ok.Select(o => o.LatencyMs).DefaultIfEmpty().Average(),
                    Modelled: ok.Select(o => candidate.Latency(r.Placement, o.Request, fitted).TotalMs).DefaultIfEmpty().Average());
            }).ToList();
            var first = means.First(m => m.Algorithm == baseline.Algorithm);
            return string.Create(CultureInfo.InvariantCulture,
                $"{rule}, fitted on {baseline.Algorithm} ({ReplayLatencyModel.Describe(fitted)}): ")
                + string.Join("; ", means.Select(m => string.Create(CultureInfo.InvariantCulture,
                    $"{m.Algorithm} {m.Measured:F0} / {m.Modelled:F0} ms ({m.Measured / first.Measured:F3} / {m.Modelled / first.Modelled:F3})")));
        }
        var rows = new List<ReplayRow>();
        var perRequest = new Dictionary<string, Dictionary<ReplayedRequest, (double Measured, double Modelled)>>(StringComparer.Ordinal);
        foreach (var result in results)
        {
            var outcomes = runs.Outcomes[result.Algorithm];
            var ok = outcomes.Where(o => o.Ok).ToList();
            var tokens = Math.Max(1, ok.Sum(o => (long)o.Request.Request.Tokens));
            var modelled = ok.Select(o => model.Latency(result.Placement, o.Request, bus)).ToList();
            perRequest[result.Algorithm] = ok.Select((o, i) => (o.Request, (o.LatencyMs, modelled[i].TotalMs))).ToDictionary(p => p.Request, p => p.Item2);
            var decodeTokens = Math.Max(1, ok.Sum(o => o.Request.Decode));
            var (expectedLocal, expectedRemote) = ExpectedCalls(result.Placement, ok.Select(o => o.Request));
            var wires = ok.Select(o => model.Wire(result.Placement, o.Request)).ToList();
            rows.Add(new ReplayRow
            {
                Algorithm = result.Algorithm,
                PlacementVersion = runs.Versions[result.Algorithm],
                Requests = outcomes.Count,
                Failed = outcomes.Count - ok.Count,
                Errors = [.. outcomes.Where(o => !o.Ok).Select(o => o.Error!)],
                MeasuredLatencyMsMean = Round(ok.Select(o => o.LatencyMs).DefaultIfEmpty().Average()),
                MeasuredLatencyMsP99 = Round(ok.Count == 0 ? 0 : Stats.Percentile([.. ok.Select(o => o.LatencyMs)], 99)),
                MeasuredLatencyMsMeanAllAttempts = Round(ok.SelectMany(o => o.AttemptLatenciesMs).DefaultIfEmpty().Average()),
                MeasuredDecodeMsPerToken = Round(ok.Sum(o => o.Stats!.LatencyMs - o.Stats.TtftMs) / decodeTokens),
                ModelledLatencyMsMean = Round(modelled.Select(m => m.TotalMs).DefaultIfEmpty().Average()),
                ModelledLatencyMsP99 = Round(modelled.Count == 0 ? 0 : Stats.Percentile([.. modelled.Select(m => m.TotalMs)], 99)),
                ModelledDecodeMsPerToken = Round(modelled.Sum(m => m.DecodeMs) / decodeTokens),
                LocalRatio = Math.Round((double)ok.Sum(o => o.Stats!.LocalExpertCalls) / Math.Max(1, ok.Sum(o => o.Stats!.LocalExpertCalls + o.Stats.RemoteExpertCalls)), 4),
                RemoteBatchesPerToken = Math.Round((double)ok.Sum(o => o.Stats!.RemoteBatches) / tokens, 3),
                RemoteBytesPerToken = Math.Round((double)ok.Sum(o => o.Stats!.RemoteBytes) / tokens, 0),
                ModelledBytesPerToken = Math.Round((double)wires.Sum(w => w.Bytes) / tokens, 0),
                ModelledBatchesPerToken = Math.Round((double)wires.Sum(w => w.Messages) / tokens, 3),
                LocalExpertCalls = ok.Sum(o => o.Stats!.LocalExpertCalls),
                RemoteExpertCalls = ok.Sum(o => o.Stats!.RemoteExpertCalls),
                ExpectedLocalExpertCalls = expectedLocal,
                ExpectedRemoteExpertCalls = expectedRemote,
                Retries = ok.Sum(o => o.Stats!.Retries),
                SolveMs = Math.Round(result.SolveMs, 1),
                ExpertSizeMb = Math.Round(nominal.ExpertBytes[0] / 1e6, 1),
                RequestLatencies = [.. ok.Select((o, i) => new ReplayRequestLatency(
                    o.Request.Server, o.Request.Prompt, o.Request.Decode, Round(o.LatencyMs), Round(o.Stats!.TtftMs), Round(modelled[i].TotalMs), Round(modelled[i].TotalMs - modelled[i].DecodeMs)))],
                Calibration = new ReplayCalibration(
                    Math.Round(home.ExpertFixedSeconds * 1e3, 4),
                    Math.Round(home.ExpertPerRowSeconds * 1e3, 5),
                    Math.Round(runs.Bus.SecondsPerCall * 1e3, 3),
                    Math.Round(runs.Bus.SecondsPerByte * 1e9, 3),
                    Math.Round(bus.SecondsPerCall * 1e3, 3),
                    Math.Round(bus.SecondsPerByte * 1e9, 3),
                    baseline.Algorithm,
                    nominal.HiddenBytes,
                    Round(home.Requests.Values.Average(v => v.TotalMs)),
                    ReplayLatencyModel.Cores) { BusMsPerMbPerMb = Math.Round(bus.SecondsPerByteSquared * 1e15, 4) },
            });
        }

        var eplb = rows.FirstOrDefault(r => r.Algorithm == PlacementAlgorithms.Eplb);
        return eplb is null || eplb.MeasuredLatencyMsMean <= 0
            ? rows
            : [.. rows.Select(r => r with
            {
                MeasuredRatioToEplb = Math.Round(r.MeasuredLatencyMsMean / eplb.MeasuredLatencyMsMean, 3),
                ModelledRatioToEplb = Math.Round(r.ModelledLatencyMsMean / eplb.ModelledLatencyMsMean, 3),
                MeasuredRatioToEplbMedian = MedianRatio(perRequest[r.Algorithm], perRequest[eplb.Algorithm], l => l.Measured),
                ModelledRatioToEplbMedian = MedianRatio(perRequest[r.Algorithm], perRequest[eplb.Algorithm], l => l.Modelled),
            })];
    }

    private static double? MedianRatio(
        Dictionary<ReplayedRequest, (double Measured, double Modelled)> mine, Dictionary<ReplayedRequest, (double Measured, double Modelled)> eplb, Func<(double Measured, double Modelled), double> value)
    {
        var ratios = mine.Where(p => eplb.TryGetValue(p.Key, out var e) && value(e) > 0).Select(p => value(p.Value) / value(eplb[p.Key])).ToArray();
        return ratios.Length == 0 ? null : Math.Round(Stats.Median(ratios), 3);
    }

    /// <summary>
    /// Expert calls per request as the edges count them: in each step and layer, each distinct expert of the step's
    /// positions once, local when the home edge holds it. The prompt is one step, then one step per decoded position.
    /// </summary>
    public static (long Local, long Remote) ExpectedCalls(ExpertPlacement placement, IEnumerable<ReplayedRequest> requests)
    {
        ArgumentNullException.ThrowIfNull(placement);
        ArgumentNullException.ThrowIfNull(requests);
        long local = 0;
        long remote = 0;
        foreach (var request in requests)
        {
            var k = request.Request.Experts[0].Length / request.Request.Tokens;
            var steps = new List<(int From, int To)> { (0, request.Prompt) };
            steps.AddRange(Enumerable.Range(request.Prompt, request.Decode).Select(p => (p, p + 1)));
            for (var l = 0; l < placement.Layers; l++)
            {
                foreach (var (from, to) in steps)
                {
                    foreach (var expert in request.Request.Experts[l].AsSpan(from * k, (to - from) * k).ToArray().Distinct())
                    {
                        if (placement.Holds(request.Server, l, expert))
                        {
                            local++;
                        }
                        else
                        {
                            remote++;
                        }
                    }
                }
            }
        }

        return (local, remote);
    }

    public static string Text(ReplayBenchmarkSettings settings, string description, List<ReplayedRequest> replayed, IReadOnlyList<ReplayRow> rows)
    {
        var inv = CultureInfo.InvariantCulture;
        var s = new StringBuilder();
        s.AppendLine(description);
        s.AppendLine(inv, $"{ReplayModel.Description}; budgets in DeepSeek-V2-Lite expert sizes ({(rows.Count > 0 ? rows[0].ExpertSizeMb : 17.3):F1} MB)");
        s.AppendLine(inv, $"replayed {replayed.Count} held-out requests ({settings.RequestsPerServer} per edge), prompt in one step then the last {settings.DecodeTokens} tokens one by one; link {settings.LinkDelayMs} ms one way, {settings.LinkMbps} Mbps");
        if (rows.Count > 0 && rows[0].Calibration is { } c)
        {
            s.AppendLine(inv, $"model calibrated from this run: expert {c.ExpertMsPerCall:F3} ms + {c.ExpertMsPerRow:F4} ms/row, bus {c.BusMsPerCall:F2} ms/message, {c.BusMsPerMb:F2} ms/MB and {c.BusMsPerMbPerMb:F3} ms/MB per MB of the message fitted on {c.FittedOn}, {c.Cores} cores shared (pings: {c.PingMsPerCall:F2} ms, {c.PingMsPerMb:F2} ms/MB), home cost (all experts local) {c.HomeMsMean:F0} ms per request");
        }

        s.AppendLine("algorithm  failed  measured ms (p99)   modelled ms (p99)   decode ms/tok meas/model  vs eplb meas/model (median/request)  local  batches/tok meas/model  KB/tok meas/model  calls local/remote (expected)");
        foreach (var r in rows)
        {
            s.AppendLine(inv,
                $"{r.Algorithm,-10} {r.Failed,6}  {r.MeasuredLatencyMsMean,8:F0} ({r.MeasuredLatencyMsP99,6:F0})  {r.ModelledLatencyMsMean,8:F0} ({r.ModelledLatencyMsP99,6:F0})  {r.MeasuredDecodeMsPerToken,10:F1} / {r.ModelledDecodeMsPerToken,-10:F1}  {Ratio(r.MeasuredRatioToEplb)} / {Ratio(r.ModelledRatioToEplb)} ({Ratio(r.MeasuredRatioToEplbMedian)} / {Ratio(r.ModelledRatioToEplbMedian)})  {r.LocalRatio,5:F3}  {r.RemoteBatchesPerToken,6:F2} / {r.ModelledBatchesPerToken,-6:F2}  {r.RemoteBytesPerToken / 1e3,6:F1} / {r.ModelledBytesPerToken / 1e3,-6:F1}  {r.LocalExpertCalls}/{r.RemoteExpertCalls} ({r.ExpectedLocalExpertCalls}/{r.ExpectedRemoteExpertCalls})");
            foreach (var error in r.Errors)
            {
                s.AppendLine(inv, $"  {error}");
            }
        }

        return s.ToString().TrimEnd();
    }

    /// <summary>Measured and modelled mean latency per algorithm, side by side.</summary>
    public static void Plot(string path, ReplayBenchmarkSettings settings, IReadOnlyList<ReplayRow> rows)
    {
        var plot = new Plot();
        var bars = new List<Bar>();
        for (var i = 0; i < rows.Count; i++)
        {
            bars.Add(new Bar { Position = (3 * i) + 0, Value = rows[i].MeasuredLatencyMsMean, FillColor = new Color(90, 130, 190), Label = rows[i].MeasuredLatencyMsMean.ToString("F0", CultureInfo.InvariantCulture) });
            bars.Add(new Bar { Position = (3 * i) + 1, Value = rows[i].ModelledLatencyMsMean, FillColor = new Color(230, 150, 60), Label = rows[i].ModelledLatencyMsMean.ToString("F0", CultureInfo.InvariantCulture) });
        }

        plot.Add.Bars(bars);
        plot.Axes.Bottom.SetTicks([.. rows.Select((_, i) => (3.0 * i) + 0.5)], [.. rows.Select(r => r.Algorithm)]);
        plot.YLabel("mean request latency, ms");
        plot.Title(string.Create(CultureInfo.InvariantCulture, $"bench replay, {settings.LinkDelayMs} ms, {settings.LinkMbps} Mbps: measured (blue), modelled (orange)"));
        plot.Axes.Margins(bottom: 0);
        try
        {
            plot.SavePng(path, 900, 520);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new OperationException($"cannot write {path}: {ex.Message}");
        }
    }

    private static double Round(double value) => Math.Round(value, 2);

    private static string Ratio(double? value) => value is { } v ? v.ToString("F3", CultureInfo.InvariantCulture) : "  -  ";
}
