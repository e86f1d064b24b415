using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using DanceMoE.Contracts;
using DanceMoE.Coordinator;
using DanceMoE.Coordinator.Saga;
using DanceMoE.Edge;
using DanceMoE.Hosting;
using DanceMoE.Inference;
using DanceMoE.Model;
using DanceMoE.Operations;
using DanceMoE.Placement;
using MassTransit;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>
/// <c>dancemoe bench replay</c>: the ESFT-4 protocol of <c>placement simulate</c> through real edge processes. One edge
/// per domain serves the replay model (<see cref="ReplayModel"/>) and replays its domain's held-out requests with their
/// recorded routing (prompt in one step, then the last tokens one by one); each placement is computed from the history,
/// activated through the coordinator's registry and replayed in the same run. Next to what was measured: the simulator's
/// latency model for the same requests, its expert time, bus overhead and bytes calibrated from this run, and on top of it
/// what each request costs its home edge with every expert local (run here, monolithically).
/// </summary>
public static class ReplayBenchmark
{
    private const string FarCron = "0 0 0 1 1 ? 2099";
    private const int HiddenSize = 2048;
    private const int RowBytes = HiddenSize * sizeof(float);
    private const int BigBatchRows = 256;

    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    /// <summary>Runs the replay; the table (or JSON) goes to <paramref name="output"/>, progress to <paramref name="log"/>.</summary>
    public static async Task<IReadOnlyList<ReplayRow>> RunAsync(ReplayBenchmarkSettings settings, TextWriter output, TextWriter log, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(log);
        LabChecks.EnsureNoCluster();
        var total = Stopwatch.StartNew();
        void Log(string line) => log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"bench replay [{total.Elapsed.TotalSeconds,5:F1} s]: {line}"));

        // The placements are planned for this machine's bus: every message costs its CPU, shared by the run's processes.
        var latency = new LatencyOptions
        {
            DecodeTokens = settings.DecodeTokens, RequestIntervalSeconds = double.MaxValue, MessageSeconds = settings.MessageMs / 1e3,
            MessageByteSeconds = settings.MessageMbMs / 1e9, MessageLanes = ReplayLatencyModel.Cores,
        };
        var nominalLink = LinkSpec.FromMbps(settings.LinkMbps, 2 * settings.LinkDelayMs);
        var simulation = PlacementSimulation.FromTraces(settings.History, settings.Eval, new SimulationSpec(settings.Servers, settings.Memory, settings.MemoryMb, null, nominalLink, latency));
        var replayed = Select(simulation, settings, latency);
        Log(simulation.Description);
        Log(string.Create(CultureInfo.InvariantCulture,
            $"replaying {replayed.Count} held-out requests ({settings.RequestsPerServer} per edge, {replayed.Sum(r => r.Request.Tokens)} tokens); expert size {MoeModel.DeepSeekV2Lite.ExpertBytes[0] / 1e6:F1} MB (DeepSeek-V2-Lite) for budgets"));

        Log(string.Create(CultureInfo.InvariantCulture, $"solving {string.Join(", ", settings.Algorithms)} on the history, planned with {settings.MessageMs} ms of bus work per message and {settings.MessageMbMs} ms per MB over {ReplayLatencyModel.Cores} cores..."));
        var results = simulation.Solve([.. settings.Algorithms.Select(PlacementAlgorithms.Create)], cancellationToken).OrderBy(r => r.Algorithm != PlacementAlgorithms.Eplb).ToList();
        var exported = ReplayModel.Resolve(Log);
        Log(ReplayModel.Description);

        var home = await MeasureHomeAsync(exported, replayed, settings.Repeats, Log, cancellationToken).ConfigureAwait(false);
        var edges = Enumerable.Range(1, settings.Servers.Count).Select(i => $"edge-{i}").ToList();
        var calibration = new ReplayLatencyModel(settings, simulation.Problem.Cluster.Servers, home, latency);
        var runs = await ReplayOnEdgesAsync(settings, exported, edges, replayed, results, home, Replan, Log, cancellationToken).ConfigureAwait(false);

        var rows = ReplayReport.Rows(settings, simulation, results, home, runs, latency, Log);
        output.WriteLine(settings.Json ? JsonSerializer.Serialize(rows, Json) : ReplayReport.Text(settings, simulation.Description, replayed, rows));
        if (settings.Plot is { } plot)
        {
            ReplayReport.Plot(plot, settings, rows);
            Log($"plot written to {plot}");
        }

        return rows;

        // Once eplb's first round is measured: the bus costs fitted to it, and the placements that depend on them planned again
        // with the model those costs calibrate, the one that predicts the run.
        AlgorithmResult Replan(AlgorithmResult result, IReadOnlyList<ReplayOutcome> eplb, BusCosts start)
        {
            if (!settings.Replan || result.Algorithm != PlacementAlgorithms.Latency || results[0].Algorithm != PlacementAlgorithms.Eplb || eplb.Count == 0)
            {
                return result;
            }

            var bus = calibration.Fit(results[0].Placement, eplb, start);
            var problem = calibration.Calibrated(simulation.Problem, bus);
            var planned = Simulation.Run(problem, simulation.Eval, [PlacementAlgorithms.Create(result.Algorithm)], cancellationToken)[0];
            Log(string.Create(CultureInfo.InvariantCulture,
                $"{result.Algorithm}: planned again with this machine's bus fitted on eplb's first round ({ReplayLatencyModel.Describe(bus)} over {ReplayLatencyModel.Cores} shared cores) in {planned.SolveMs:F0} ms"));
            return planned;
        }
    }

    /// <summary>Each edge's first held-out requests, with their id in the replayed trace files and their prompt and decode lengths.</summary>
    private static List<ReplayedRequest> Select(PlacementSimulation simulation, ReplayBenchmarkSettings settings, LatencyOptions latency)
    {
        var list = new List<ReplayedRequest>();
        for (var s = 0; s < settings.Servers.Count; s++)
        {
            // With the default split, the eval requests are the lines after the history's in the same files.
            var offset = settings.Eval is null ? simulation.Problem.History!.Requests.Count(r => r.Server == s) : 0;
            var mine = simulation.Eval.Requests.Where(r => r.Server == s).Take(settings.RequestsPerServer).ToList();
            if (mine.Count == 0)
            {
                throw new InvalidSettingsException($"no held-out requests of {settings.Servers[s]} to replay");
            }

            list.AddRange(mine.Select((r, i) =>
            {
                var (prompt, decode) = latency.Split(r.Tokens);
                return new ReplayedRequest(s, offset + i, r, prompt, decode);
            }));
        }

        return list;
    }

    /// <summary>
    /// Each request run here with every expert local (once to load its experts, then <paramref name="repeats"/> times
    /// timed, the fastest kept, as on the edges): its home cost, and the experts' time in that fastest run.
    /// </summary>
    private static async Task<HomeCosts> MeasureHomeAsync(string exported, List<ReplayedRequest> replayed, int repeats, Action<string> log, CancellationToken cancellationToken)
    {
        log($"running each request here with every expert local (no bus), the fastest of {repeats}, to measure its home cost and the experts' time...");
        using var local = new LocalReplay(exported);
        var costs = new Dictionary<ReplayedRequest, (double TotalMs, double DecodeMs)>();
        var calls = new List<(int Rows, double Seconds)>();
        foreach (var request in replayed)
        {
            await local.RunAsync(request.Routing(), request.Prompt, request.Decode, timeExperts: false, cancellationToken).ConfigureAwait(false);
            List<(int Rows, double Seconds)> fastestCalls = [];
            for (var a = 0; a < repeats; a++)
            {
                var cost = await local.RunAsync(request.Routing(), request.Prompt, request.Decode, timeExperts: true, cancellationToken).ConfigureAwait(false);
                var timed = local.TakeExpertCalls();
                if (!costs.TryGetValue(request, out var best) || cost.TotalMs < best.TotalMs)
                {
                    costs[request] = cost;
                    fastestCalls = timed;
                }
            }

            calls.AddRange(fastestCalls);
        }

        var (fixedSeconds, perRowSeconds) = FitLine(calls);
        log(string.Create(CultureInfo.InvariantCulture,
            $"expert call: {fixedSeconds * 1e3:F3} ms + {perRowSeconds * 1e3:F4} ms per row ({calls.Count} calls); home cost {costs.Values.Average(c => c.TotalMs - c.DecodeMs):F0} ms per prompt, {costs.Values.Sum(c => c.DecodeMs) / Math.Max(1, replayed.Sum(r => r.Decode)):F1} ms per decoded token"));
        return new HomeCosts(costs, fixedSeconds, perRowSeconds);
    }

    /// <summary>Least squares of seconds = a + b x rows.</summary>
    private static (double Fixed, double PerRow) FitLine(List<(int Rows, double Seconds)> calls)
    {
        var n = calls.Count;
        var mx = calls.Average(c => (double)c.Rows);
        var my = calls.Average(c => c.Seconds);
        var sxx = calls.Sum(c => (c.Rows - mx) * (c.Rows - mx));
        var b = sxx > 0 ? calls.Sum(c => (c.Rows - mx) * (c.Seconds - my)) / sxx : 0;
        b = Math.Max(b, 1e-9);
        return (n == 0 ? 0 : Math.Max(my - (b * mx), 1e-7), b);
    }

    private static async Task<EdgeRuns> ReplayOnEdgesAsync(
        ReplayBenchmarkSettings settings, string exported, List<string> edges, List<ReplayedRequest> replayed, List<AlgorithmResult> results, HomeCosts home,
        Func<AlgorithmResult, IReadOnlyList<ReplayOutcome>, BusCosts, AlgorithmResult> replan, Action<string> log, CancellationToken cancellationToken)
    {
        var manifest = ModelManifest.Load(exported);
        var allExpertsMib = (int)(manifest.Experts.Sum(e => e.WeightBytes) >> 20) + 1;
        await using var environment = await ShiftEnvironment.CreateAsync(log, cancellationToken).ConfigureAwait(false);
        var finished = false;
        try
        {
            var invariant = CultureInfo.InvariantCulture;
            environment.Start("coordinator", ["coordinator", "--model", exported, "--cron", FarCron, "--activation-timeout-s", "600", "--load-timeout-s", "600"]);
            for (var s = 0; s < edges.Count; s++)
            {
                var traceFile = Path.Combine(environment.Directory, $"replay-{edges[s]}.json");
                new ReplayTrace(manifest.Architecture.TopK, [.. replayed.Where(r => r.Server == s).Select(r => new ReplayTraceRequest(r.Id, r.Request.Tokens, r.Request.Experts))]).Save(traceFile);
                environment.Start(edges[s],
                [
                    "edge", "--id", edges[s], "--model", exported, "--memory-mb", allExpertsMib.ToString(invariant), "--placement", "uniform", "--uniform-over", string.Join(",", edges),
                    "--provider", "cpu", "--threads", "1", "--deadline-ms", "120000", "--max-step-tokens", "2048", "--max-active", "1",
                    "--link-delay-ms", settings.LinkDelayMs.ToString(invariant), "--link-mbps", settings.LinkMbps.ToString(invariant), "--no-traces",
                ],
                new Dictionary<string, string> { ["Edge__ReplayTrace"] = traceFile, ["Edge__MaxPromptTokens"] = "2048", ["Edge__MaxBatchBytes"] = (128 << 20).ToString(invariant) });
            }

            log($"started the coordinator and {edges.Count} edges (virtual host {environment.VirtualHost}); waiting until they serve...");
            await environment.WaitReadyAsync(TimeSpan.FromSeconds(600), cancellationToken).ConfigureAwait(false);
            await using var client = await BusClient.StartAsync(environment.RabbitMqUri, cfg => cfg.AddDeserializer(ExpertBatchSerializer.Instance), cancellationToken).ConfigureAwait(false);
            var outcomes = results.ToDictionary(r => r.Algorithm, _ => new List<ReplayOutcome>(), StringComparer.Ordinal);
            var versions = new Dictionary<string, int>(StringComparer.Ordinal);
            BusCosts? busCosts = null;

            // Round by round (each edge's first request under every placement, then its second, ...), so that the load of
            // a shared machine drifting during the run falls on every placement alike rather than on whichever ran then;
            // each round starts with the next placement, so none is always first after the previous round's.
            // Each request is replayed once per pass, the passes one after another, so that a burst of the others' work on this
            // machine (minutes at times) falls on one attempt of a request under a placement, not on all of them.
            var rounds = replayed.GroupBy(r => replayed.Where(x => x.Server == r.Server).ToList().IndexOf(r)).OrderBy(g => g.Key).ToList();
            var attempts = replayed.ToDictionary(r => r, _ => results.ToDictionary(x => x.Algorithm, _ => new List<ReplayOutcome>(), StringComparer.Ordinal));
            foreach (var (round, pass) in Enumerable.Range(0, settings.Repeats).SelectMany(pass => rounds.Select(round => (round, pass))))
            {
                for (var i = 0; i < results.Count; i++)
                {
                    var index = (i + round.Key + pass) % results.Count;
                    if (round.Key == 0 && pass == 0 && i > 0)
                    {
                        results[index] = replan(results[index], [.. attempts.Values.SelectMany(a => a[results[0].Algorithm]).Where(o => o.Ok)], busCosts ?? new BusCosts(0, 0));
                    }

                    var result = results[index];
                    log($"{result.Algorithm}: activating its placement through the coordinator's registry (round {round.Key + 1} of {rounds.Count}, pass {pass + 1} of {settings.Repeats})...");
                    var assignments = PlacementAssignments.From(result.Placement, edges);
                    versions[result.Algorithm] = await ActivateAsync(client.Requests, assignments, cancellationToken).ConfigureAwait(false);
                    environment.EnsureRunning();
                    log($"{result.Algorithm}: placement v{versions[result.Algorithm]} active; warm-up (the first tokens of each edge's first request, not measured)...");
                    foreach (var request in replayed.Where(r => r.Id == replayed.Where(x => x.Server == r.Server).Min(x => x.Id)))
                    {
                        var warmup = await SendAsync(client.Requests, edges[request.Server], request with { Prompt = Math.Min(16, request.Prompt), Decode = Math.Min(2, request.Decode) }, cancellationToken)
                            .ConfigureAwait(false);
                        if (!warmup.Ok)
                        {
                            throw new OperationException($"{edges[request.Server]} failed its warm-up request: {warmup.Error}", OperationFailure.Failed);
                        }
                    }

                    busCosts ??= await MeasureBusAsync(client.Bus, edges, assignments, settings, home, log, cancellationToken).ConfigureAwait(false);
                    log($"{result.Algorithm}: replaying {round.Count()} requests, one at a time...");
                    foreach (var request in round)
                    {
                        var tried = attempts[request][result.Algorithm];
                        tried.Add(await SendAsync(client.Requests, edges[request.Server], request, cancellationToken).ConfigureAwait(false));
                        if (tried.Count == settings.Repeats)
                        {
                            outcomes[result.Algorithm].Add(ReplayOutcome.Fastest(tried));
                        }
                    }

                    environment.EnsureRunning();
                }
            }

            foreach (var (algorithm, list) in outcomes)
            {
                log(string.Create(invariant, $"{algorithm}: mean {list.Where(o => o.Ok).Select(o => o.LatencyMs).DefaultIfEmpty().Average():F0} ms, {list.Count(o => !o.Ok)} failed"));
            }

            finished = true;
            return new EdgeRuns(outcomes, versions, busCosts ?? new BusCosts(0, 0));
        }
        finally
        {
            environment.KeepDirectory = !finished || settings.KeepLogs;
            log("stopping the edges and the coordinator, dropping the database and the virtual host...");
        }
    }

    private static async Task<int> ActivateAsync(RequestChannel requests, List<ExpertAssignment> assignments, CancellationToken cancellationToken)
    {
        try
        {
            var response = await requests.GetResponse<ActivatePlacement, PlacementSwitched>(
                    ActivatePlacementConsumerDefinition.Address, new ActivatePlacement { MigrationId = NewId.NextGuid(), Stage = 1, Assignments = assignments }, RequestTimeout.After(s: 900), cancellationToken)
                .ConfigureAwait(false);
            return response.Message.Version;
        }
        catch (RequestFaultException ex)
        {
            throw new OperationException($"the coordinator did not activate the placement: {ex.Fault?.Exceptions.FirstOrDefault()?.Message ?? ex.Message}", OperationFailure.Failed, ex);
        }
    }

    private static async Task<ReplayOutcome> SendAsync(RequestChannel requests, string edge, ReplayedRequest request, CancellationToken cancellationToken)
    {
        var message = new GenerateText
        {
            RequestId = NewId.NextGuid(),
            PromptTokenIds = ReplayPrompt.Tokens(request.Prompt),
            MaxNewTokens = request.Decode + 1,
            ReplayRequest = request.Id,
            WorkloadTag = "replay",
        };
        try
        {
            var answer = await EdgeRequests.SendAsync(requests, edge, message, TimeSpan.FromSeconds(600), cancellationToken).ConfigureAwait(false);
            return new ReplayOutcome(request, true, null, answer.Stats);
        }
        catch (OperationException ex)
        {
            return new ReplayOutcome(request, false, ex.Message, null);
        }
    }

    /// <summary>
    /// Expert batches of one row, then of <see cref="BigBatchRows"/> rows, sent at once to every peer an origin edge has
    /// (all edges but one), straight to their experts queues, as a step does: the slowest answer, less the answer's
    /// emulated link and the expert's own time, gives what the bus adds to a step's remote calls and to every byte they
    /// carry (serialising, the broker: CPU work the processes share, so per byte of all the peers' batches) beyond the
    /// emulated link.
    /// </summary>
    private static async Task<BusCosts> MeasureBusAsync(
        IBus bus, List<string> edges, List<ExpertAssignment> assignments, ReplayBenchmarkSettings settings, HomeCosts home, Action<string> log, CancellationToken cancellationToken)
    {
        var peers = edges.Skip(1).Select(edge => (
            Held: assignments.First(a => a.Servers.Contains(edge, StringComparer.Ordinal)),
            Client: bus.CreateRequestClient<RunExpertBatch>(EdgeQueues.ExpertsAddress(edge), RequestTimeout.After(s: 60)))).ToList();
        RunExpertBatch Batch(ExpertAssignment held, int rows) => new()
        {
            BatchId = NewId.NextGuid(),
            OriginEdgeId = "bench-replay",
            Layer = held.Layer,
            HiddenSize = HiddenSize,
            Slices = [new ExpertSlice { Expert = held.Expert, Rows = rows, TokenRows = [.. Enumerable.Range(0, rows)] }],
            Hidden = new byte[rows * RowBytes],
        };
        async Task<double> SlowestAsync(int rows, bool json = false)
        {
            var start = Stopwatch.GetTimestamp();
            await Task.WhenAll(peers.Select(peer => peer.Client.GetResponse<ExpertBatchResult>(Batch(peer.Held, rows), x => x.UseExecute(send =>
            {
                if (!json)
                {
                    send.Serializer = ExpertBatchSerializer.Instance;
                }
            }), cancellationToken))).ConfigureAwait(false);
            return Stopwatch.GetElapsedTime(start).TotalSeconds;
        }

        var small = new List<double>();
        var big = new List<double>();
        var bigJson = new List<double>();
        for (var i = 0; i < 12; i++)
        {
            var (one, many, manyJson) = (await SlowestAsync(1).ConfigureAwait(false), await SlowestAsync(BigBatchRows).ConfigureAwait(false),
                await SlowestAsync(BigBatchRows, json: true).ConfigureAwait(false));
            if (i >= 2)
            {
                small.Add(one);
                big.Add(many);
                bigJson.Add(manyJson);
            }
        }

        double Rest(double roundTrip, int rows) =>
            roundTrip - (settings.LinkDelayMs / 1e3) - (rows * RowBytes * 8 / (settings.LinkMbps * 1e6)) - home.ExpertFixedSeconds - (rows * home.ExpertPerRowSeconds);
        var perCall = Math.Max(0, Rest(Stats.Median(small), 1));
        var perByte = Math.Max(0, (Rest(Stats.Median(big), BigBatchRows) - perCall) / (2.0 * peers.Count * (BigBatchRows - 1) * RowBytes));
        log(string.Create(CultureInfo.InvariantCulture,
            $"bus overhead: {perCall * 1e3:F2} ms per remote call, {perByte * 1e9:F2} ms per MB (median slowest of {peers.Count} concurrent round trips {Stats.Median(small) * 1e3:F2} ms for 1 row, {Stats.Median(big) * 1e3:F1} ms for {BigBatchRows} rows, less the answer's emulated link and the expert); "
            + $"the {BigBatchRows}-row batch is {ExpertBatchSerializer.MessageBytes(Batch(assignments[0], BigBatchRows))} bytes in the expert-batch format and "
            + $"{ExpertBatchSerializer.JsonMessageBytes(Batch(assignments[0], BigBatchRows))} as JSON, whose slowest round trip is {Stats.Median(bigJson) * 1e3:F1} ms"));
        return new BusCosts(perCall, perByte);
    }
}

/// <summary>One replayed request: its edge (server index), id in the replayed trace files, recorded routing, prompt and decode lengths.</summary>
public sealed record ReplayedRequest(int Server, int Id, TraceRequest Request, int Prompt, int Decode)
{
    public ReplayRouting Routing() => new(Request.Experts[0].Length / Request.Tokens, Request.Experts);
}

/// <summary>How one replayed request went on the edges: its fastest attempt, and every attempt's latency in ms.</summary>
public sealed record ReplayOutcome(ReplayedRequest Request, bool Ok, string? Error, GenerationStats? Stats)
{
    public double LatencyMs => Stats?.LatencyMs ?? 0;

    public IReadOnlyList<double> AttemptLatenciesMs { get; init; } = [];

    /// <summary>
    /// The fastest of a request's attempts under one placement: the machine is shared, and what the others run only adds
    /// time, so the fastest is the closest to what the placement costs. A failed attempt fails the request.
    /// </summary>
    public static ReplayOutcome Fastest(IReadOnlyList<ReplayOutcome> attempts)
    {
        ArgumentNullException.ThrowIfNull(attempts);
        var chosen = attempts.FirstOrDefault(o => !o.Ok) ?? attempts.MinBy(o => o.LatencyMs)!;
        return chosen with { AttemptLatenciesMs = [.. attempts.Where(o => o.Ok).Select(o => o.LatencyMs)] };
    }
}

/// <summary>What each request costs its home edge with every expert local, and one expert call's time (a + b x rows).</summary>
internal sealed record HomeCosts(IReadOnlyDictionary<ReplayedRequest, (double TotalMs, double DecodeMs)> Requests, double ExpertFixedSeconds, double ExpertPerRowSeconds);

/// <summary>What the edges did: each algorithm's outcomes, its placement version, and the bus overhead measured.</summary>
internal sealed record EdgeRuns(IReadOnlyDictionary<string, List<ReplayOutcome>> Outcomes, IReadOnlyDictionary<string, int> Versions, BusCosts Bus);

/// <summary>What the bus adds to a remote call beyond the emulated link: seconds per call, per byte carried (either way), and per byte per byte of the message.</summary>
internal sealed record BusCosts(double SecondsPerCall, double SecondsPerByte, double SecondsPerByteSquared = 0);
