using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using DanceMoE.Cli.Verbs;
using DanceMoE.Placement;

namespace DanceMoE.Cli.Commands;

/// <summary>
/// <c>dancemoe placement simulate</c>: every placement algorithm computed from history routing traces and judged on
/// other requests; <c>dancemoe placement bench</c>: solve times on seeded synthetic instances.
/// </summary>
public static class PlacementCommand
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    public static Command Create() => new("placement", "expert placement: simulate the algorithms on routing traces, time them, or run the coordinator's job now")
    {
        Simulate(),
        Bench(),
        PlacementRunNow.Create(),
    };

    private static Command Simulate()
    {
        var history = CliOptions.Text("history", "routing traces the placements are computed from (SERVER.layerNN.txt)", required: true, valueName: "DIR");
        var eval = CliOptions.Text("eval", "routing traces they are judged on (default: the second half of --history)", valueName: "DIR");
        var servers = CliOptions.Text("servers", "one server per workload domain, named as in the trace files", required: true, valueName: "D1,D2,..");
        var memory = CliOptions.Double("memory", 0.3, "share of all experts' bytes each server holds", 0.0001, 1);
        var memoryMb = CliOptions.Text("memory-mb", "each server's budget in MB, one per server (instead of --memory)", valueName: "A,B,..");
        var bandwidth = CliOptions.Double("bandwidth-mbps", 500, "link bandwidth", 0.001);
        var rtt = CliOptions.Double("rtt-ms", 2, "link round-trip time", 0);
        var speed = CliOptions.Text("speed", "each server's relative compute speed (default: 1 each)", valueName: "1,1,..");
        var decodeTokens = CliOptions.Int("decode-tokens", 64, "decode tokens per request", 0);
        var interval = CliOptions.Double("request-interval-s", 10, "seconds between one server's requests", 0.001);
        var algorithms = CliOptions.Text("algorithms", "algorithms to run: all, or a comma-separated list", "all", valueName: "all|a,b");
        var migrateFrom = CliOptions.Text("migrate-from", "also plan the migration from this algorithm's placement to each other one", valueName: "ALGO");
        var horizon = CliOptions.Double("horizon-s", 300, "time over which a migration must pay for itself", 0);
        var json = CliOptions.Flag("json", "print the results as JSON");
        var plot = CliOptions.Text("plot", "also draw latency and local ratio per algorithm to this PNG", valueName: "FILE.png");
        var command = new Command("simulate", "every placement algorithm computed from history routing traces and judged on other requests")
        {
            history, eval, servers, memory, memoryMb, bandwidth, rtt, speed, decodeTokens, interval, algorithms, migrateFrom, horizon, json, plot,
        };
        command.SetAction((result, cancellationToken) =>
        {
            if (result.GetValue(memoryMb) is not null && result.GetResult(memory) is { Implicit: false })
            {
                throw new UsageException("give --memory or --memory-mb, not both");
            }

            return Task.FromResult(Simulate(
                result.GetRequiredValue(history),
                result.GetValue(eval),
                List(result.GetRequiredValue(servers)),
                result.GetValue(memory),
                result.GetValue(memoryMb),
                result.GetValue(speed),
                LinkSpec.FromMbps(result.GetValue(bandwidth), result.GetValue(rtt)),
                new LatencyOptions { DecodeTokens = result.GetValue(decodeTokens), RequestIntervalSeconds = result.GetValue(interval) },
                Algorithms(result.GetRequiredValue(algorithms)),
                result.GetValue(migrateFrom),
                result.GetValue(horizon),
                result.GetValue(json),
                result.GetValue(plot),
                cancellationToken));
        });
        return command;
    }

    private static int Simulate(
        string historyDir, string? evalDir, List<string> domains, double memory, string? memoryMb, string? speedText, LinkSpec link, LatencyOptions options,
        IReadOnlyList<IPlacementAlgorithm> algorithms, string? migrateFrom, double horizon, bool asJson, string? plot, CancellationToken cancellationToken)
    {
        var model = MoeModel.DeepSeekV2Lite;
        var budgets = memoryMb is null
            ? Enumerable.Repeat((long)(memory * model.TotalExpertBytes), domains.Count).ToArray()
            : Numbers(memoryMb, "memory-mb", domains.Count).Select(mb => (long)(mb * 1e6)).ToArray();
        var speeds = speedText is null ? Enumerable.Repeat(1.0, domains.Count).ToArray() : Numbers(speedText, "speed", domains.Count);
        if (migrateFrom is not null && !algorithms.Any(a => a.Name == migrateFrom))
        {
            throw new UsageException($"--migrate-from {migrateFrom} must be one of the algorithms run");
        }

        var requests = Load(historyDir, domains, model);
        Workload history;
        Workload eval;
        if (evalDir is null)
        {
            (history, eval) = Workload.SplitHalves(requests);
        }
        else
        {
            history = new Workload(requests);
            eval = new Workload(Load(evalDir, domains, model));
        }

        var servers = domains.Select((d, i) => ServerSpec.Edge(d, budgets[i], speeds[i])).ToList();
        var cluster = Cluster.FullMesh(servers, link);
        var problem = new PlacementProblem(model, cluster, ActivationCounts.FromWorkload(servers.Count, model, history))
        {
            History = history,
            Latency = options,
        };
        var results = Progress.Run($"planning with {algorithms.Count} algorithm(s)", _ => Solve(problem, eval, algorithms, cancellationToken));
        var migrations = migrateFrom is null ? null : Migrations(problem, results, migrateFrom, horizon);
        if (plot is not null)
        {
            var title = string.Create(CultureInfo.InvariantCulture,
                $"{string.Join(",", domains)}: {budgets.Average() / model.TotalExpertBytes:P0} memory, {link.BytesPerSecond * 8 / 1e6:F0} mbps, rtt {link.RttSeconds * 1e3:F1} ms");
            try
            {
                PlacementPlot.Save(plot, title, results);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                throw new CliException($"cannot write {plot}: {ex.Message}");
            }
        }

        if (asJson)
        {
            Console.WriteLine(JsonSerializer.Serialize(results.Select(r => Row(r, migrations?[r.Algorithm])).ToList(), Json));
        }
        else
        {
            Console.WriteLine($"history {history.Requests.Count} requests / {history.Tokens} tokens, eval {eval.Requests.Count} requests / {eval.Tokens} tokens; "
                + $"budgets {string.Join(",", budgets.Select(b => (b / 1e6).ToString("F0", CultureInfo.InvariantCulture)))} MB; link {link.BytesPerSecond * 8 / 1e6:F0} Mbps, RTT {link.RttSeconds * 1e3:F1} ms");
            PrintTable(results);
            if (migrations is not null)
            {
                Console.WriteLine();
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"migration from {migrateFrom} (horizon {horizon:F0} s, one request per {options.RequestIntervalSeconds:F0} s per server):"));
                Console.WriteLine($"{"to",-11} {"loads",6} {"unloads",8} {"GB moved",9} {"T_mig s",8} {"churn",6} {"migrate",8}");
                foreach (var (name, (plan, decision)) in migrations)
                {
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"{name,-11} {plan.Loads,6} {plan.Unloads,8} {plan.BytesMoved / 1e9,9:F2} {plan.Seconds,8:F1} {plan.Churn,6:F2} {(decision.Migrate ? "yes" : "no"),8}"));
                }
            }
        }

        return ExitCodes.Ok;
    }

    private static Dictionary<string, (MigrationPlan Plan, MigrationDecision Decision)> Migrations(
        PlacementProblem problem, IReadOnlyList<AlgorithmResult> results, string from, double horizon)
    {
        var source = results.First(r => r.Algorithm == from);
        var rate = problem.Cluster.Count / problem.Latency.RequestIntervalSeconds;
        var migrations = new Dictionary<string, (MigrationPlan, MigrationDecision)>(StringComparer.Ordinal);
        foreach (var target in results)
        {
            MigrationPlan plan;
            try
            {
                plan = MigrationPlanner.Plan(source.Placement, target.Placement, problem.Model, problem.Cluster);
            }
            catch (InvalidOperationException ex)
            {
                throw new CliException($"migration {from} -> {target.Algorithm}: {ex.Message}");
            }

            var decision = MigrationPlanner.Decide(source.Metrics.LatencyMsMean / 1e3, target.Metrics.LatencyMsMean / 1e3, rate, horizon, plan);
            migrations[target.Algorithm] = (plan, decision);
        }

        return migrations;
    }

    private static Command Bench()
    {
        var servers = CliOptions.Int("servers", 8, "servers", 1, 64);
        var layers = CliOptions.Int("layers", 64, "MoE layers", 1, 1024);
        var experts = CliOptions.Int("experts", 256, "experts per layer", 2, 4096);
        var topK = CliOptions.Int("top-k", 8, "experts per token (at most --experts)", 1);
        var memory = CliOptions.Double("memory", 0.3, "share of all experts' bytes each server holds", 0.0001, 1);
        var requests = CliOptions.Int("requests", 4, "synthetic requests per half (history, eval)", 1, 1000);
        var tokens = CliOptions.Int("tokens", 128, "tokens per request", 2, 100_000);
        var algorithms = CliOptions.Text("algorithms", "algorithms to run: all, or a comma-separated list", "all", valueName: "all|a,b");
        var json = CliOptions.Flag("json", "print the results as JSON");
        var command = new Command("bench", "solve times on seeded synthetic instances") { servers, layers, experts, topK, memory, requests, tokens, algorithms, json };
        command.Validators.Add(result =>
        {
            if (result.GetValue(topK) > result.GetValue(experts))
            {
                result.AddError($"--top-k must be between 1 and {result.GetValue(experts)} (got '{result.GetValue(topK)}')");
            }
        });
        command.SetAction((result, cancellationToken) => Task.FromResult(Bench(
            result.GetValue(servers),
            result.GetValue(layers),
            result.GetValue(experts),
            result.GetValue(topK),
            result.GetValue(memory),
            result.GetValue(requests),
            result.GetValue(tokens),
            Algorithms(result.GetRequiredValue(algorithms)),
            result.GetValue(json),
            cancellationToken)));
        return command;
    }

    private static int Bench(
        int serverCount, int layers, int experts, int topK, double memory, int requests, int tokens, IReadOnlyList<IPlacementAlgorithm> algorithms, bool asJson, CancellationToken cancellationToken)
    {
        var model = MoeModel.Uniform(layers, experts, topK, MoeModel.DeepSeekV2Lite.ExpertBytes[0], MoeModel.DeepSeekV2Lite.HiddenBytes);
        var budget = (long)(memory * model.TotalExpertBytes);
        var cluster = Cluster.FullMesh(
            Enumerable.Range(0, serverCount).Select(i => ServerSpec.Edge($"s{i}", budget)).ToList(),
            LinkSpec.FromMbps(500, 2));
        var clock = Stopwatch.StartNew();
        var all = SyntheticWorkload.Generate(7, serverCount, model, 2 * requests, tokens);
        var (history, eval) = Workload.SplitHalves(all.Requests);
        var problem = new PlacementProblem(model, cluster, ActivationCounts.FromWorkload(serverCount, model, history)) { History = history };
        Console.Error.WriteLine($"bench: {serverCount} servers x {layers} layers x {experts} experts (top-{topK}), memory {memory:P0}, "
            + $"{history.Tokens} history tokens, generated in {clock.ElapsedMilliseconds} ms");
        var results = Solve(problem, eval, algorithms, cancellationToken);
        if (asJson)
        {
            Console.WriteLine(JsonSerializer.Serialize(results.Select(Row).ToList(), Json));
        }
        else
        {
            PrintTable(results);
        }

        return ExitCodes.Ok;
    }

    private static IReadOnlyList<AlgorithmResult> Solve(PlacementProblem problem, Workload eval, IReadOnlyList<IPlacementAlgorithm> algorithms, CancellationToken cancellationToken)
    {
        try
        {
            return Simulation.Run(problem, eval, algorithms, cancellationToken);
        }
        catch (InfeasiblePlacementException ex)
        {
            throw new CliException($"infeasible: {ex.Message}");
        }
    }

    private static Dictionary<string, object> Row(AlgorithmResult r) => Row(r, null);

    private static Dictionary<string, object> Row(AlgorithmResult r, (MigrationPlan Plan, MigrationDecision Decision)? migration)
    {
        var row = Metrics(r);
        if (migration is { } m)
        {
            row["migration_loads"] = m.Plan.Loads;
            row["migration_bytes"] = m.Plan.BytesMoved;
            row["migration_seconds"] = Math.Round(m.Plan.Seconds, 2);
            row["churn"] = Math.Round(m.Plan.Churn, 4);
            row["migrate"] = m.Decision.Migrate;
        }

        return row;
    }

    private static Dictionary<string, object> Metrics(AlgorithmResult r) => new()
    {
        ["algorithm"] = r.Algorithm,
        ["local_ratio"] = Math.Round(r.Metrics.LocalRatio, 5),
        ["remote_calls_per_token"] = Math.Round(r.Metrics.RemoteCallsPerToken, 4),
        ["bytes_per_token"] = Math.Round(r.Metrics.BytesPerToken, 1),
        ["latency_ms_mean"] = Math.Round(r.Metrics.LatencyMsMean, 2),
        ["latency_ms_p99"] = Math.Round(r.Metrics.LatencyMsP99, 2),
        ["decode_ms_per_token"] = Math.Round(r.Metrics.DecodeMsPerToken, 3),
        ["decode_round_trip_ratio"] = Math.Round(r.Metrics.DecodeRoundTripRatio, 4),
        ["solve_ms"] = Math.Round(r.SolveMs, 1),
        ["replicas"] = r.Placement.TotalReplicas,
    };

    private static void PrintTable(IReadOnlyList<AlgorithmResult> results)
    {
        Console.WriteLine($"{"algorithm",-11} {"local",7} {"remote/tok",10} {"bytes/tok",10} {"mean ms",9} {"p99 ms",9} {"decode ms/tok",13} {"decode RT",9} {"solve ms",9}");
        foreach (var r in results)
        {
            var m = r.Metrics;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{r.Algorithm,-11} {m.LocalRatio,7:F3} {m.RemoteCallsPerToken,10:F2} {m.BytesPerToken,10:F0} {m.LatencyMsMean,9:F1} {m.LatencyMsP99,9:F1} {m.DecodeMsPerToken,13:F2} {m.DecodeRoundTripRatio,9:F3} {r.SolveMs,9:F0}"));
        }

        if (results.FirstOrDefault(r => r.Algorithm == "latency") is { } ours)
        {
            var gains = results
                .Where(r => r.Algorithm is "eplb" or "dancemoe" or "optimal")
                .Select(r => string.Create(CultureInfo.InvariantCulture,
                    $"{100 * (1 - (ours.Metrics.LatencyMsMean / r.Metrics.LatencyMsMean)):F1}% under {r.Algorithm} (p99 {100 * (1 - (ours.Metrics.LatencyMsP99 / r.Metrics.LatencyMsP99)):F1}%)"))
                .ToList();
            if (gains.Count > 0)
            {
                Console.WriteLine($"latency planner mean: {string.Join(", ", gains)}");
            }
        }
    }

    private static IReadOnlyList<IPlacementAlgorithm> Algorithms(string? text)
    {
        if (text is null or "all")
        {
            return PlacementAlgorithms.All;
        }

        try
        {
            return List(text).Select(PlacementAlgorithms.Create).ToList();
        }
        catch (ArgumentException ex)
        {
            throw new UsageException(ex.Message.Split(" (Parameter", 2)[0]);
        }
    }

    private static double[] Numbers(string text, string option, int count)
    {
        var parts = List(text);
        if (parts.Count != count)
        {
            throw new UsageException($"--{option} needs {count} comma-separated values, one per server (got {parts.Count})");
        }

        return parts.Select(p => double.TryParse(p, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v > 0
            ? v
            : throw new UsageException($"--{option}: '{p}' is not a positive number")).ToArray();
    }

    private static List<string> List(string text) =>
        text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();

    private static List<TraceRequest> Load(string directory, List<string> domains, MoeModel model)
    {
        if (!Directory.Exists(directory))
        {
            throw new CliException($"no trace directory {directory}");
        }

        var requests = new List<TraceRequest>();
        for (var server = 0; server < domains.Count; server++)
        {
            var layers = new List<IReadOnlyList<int[]>>();
            for (var l = 1; l <= model.Layers; l++)
            {
                var path = Path.Combine(directory, string.Create(CultureInfo.InvariantCulture, $"{domains[server]}.layer{l:D2}.txt"));
                if (!File.Exists(path))
                {
                    throw new CliException($"missing trace file {path}");
                }

                using var reader = File.OpenText(path);
                try
                {
                    layers.Add(TraceReader.ReadLayer(reader, model.TopK, model.Experts));
                }
                catch (FormatException ex)
                {
                    throw new CliException($"{path}: {ex.Message}");
                }
            }

            try
            {
                requests.AddRange(TraceReader.Join(server, layers, model.TopK));
            }
            catch (FormatException ex)
            {
                throw new CliException($"{domains[server]}: {ex.Message}");
            }
        }

        return requests;
    }
}
