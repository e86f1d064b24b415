using System.CommandLine;
using System.Globalization;
using DanceMoE.Cli.Verbs;
using DanceMoE.Placement;

namespace DanceMoE.Cli.Commands;

/// <summary>
/// <c>dancemoe placement simulate</c>: every placement algorithm computed from history routing traces and judged on
/// other requests; <c>dancemoe placement bench</c>: solve times on seeded synthetic instances.
/// </summary>
public static class PlacementCommand
{
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
        var memoryMb = CliOptions.Text("memory-mb", "each server's budget in MB, 0.001 to 1e9, one per server (instead of --memory)", valueName: "A,B,..");
        var bandwidth = CliOptions.Double("bandwidth-mbps", 500, "link bandwidth", 0.001, 1_000_000);
        var rtt = CliOptions.Double("rtt-ms", 2, "link round-trip time", 0, 10_000);
        var speed = CliOptions.Text("speed", "each server's relative compute speed, 0.001 to 1000 (default: 1 each)", valueName: "1,1,..");
        var decodeTokens = CliOptions.Int("decode-tokens", 64, "decode tokens per request", 0, 1_000_000);
        var interval = CliOptions.Double("request-interval-s", 10, "seconds between one server's requests", 0.001, 1_000_000);
        var algorithms = CliOptions.Text("algorithms", "algorithms to run: all, or a comma-separated list", "all", valueName: "all|a,b");
        var migrateFrom = CliOptions.Text("migrate-from", "also plan the migration from this algorithm's placement to each other one", valueName: "ALGO");
        var horizon = CliOptions.Double("horizon-s", 300, "time over which a migration must pay for itself", 0, 1e9);
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
                List(result.GetRequiredValue(servers), "servers"),
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
        OutputPaths.CheckFile("--plot", plot);
        var budgetsMb = memoryMb is null ? null : Numbers(memoryMb, "memory-mb", domains.Count, 0.001, 1e9);
        var speeds = speedText is null ? null : Numbers(speedText, "speed", domains.Count, 0.001, 1000);
        if (migrateFrom is not null && !algorithms.Any(a => a.Name == migrateFrom))
        {
            throw new UsageException($"--migrate-from {migrateFrom} must be one of the algorithms run");
        }

        var simulation = PlacementSimulation.FromTraces(historyDir, evalDir, new SimulationSpec(domains, memory, budgetsMb, speeds, link, options));
        var results = Progress.Run($"planning with {algorithms.Count} algorithm(s)", _ => simulation.Solve(algorithms, cancellationToken));
        var migrations = migrateFrom is null ? null : simulation.Migrations(results, migrateFrom, horizon);
        if (plot is not null)
        {
            simulation.Plot(plot, results);
        }

        PlacementReport.Write(Console.Out, results, asJson, simulation.Description, migrations, migrateFrom, horizon, options, simulation.LowerBoundMs(cancellationToken));
        return ExitCodes.Ok;
    }

    private static Command Bench()
    {
        var servers = CliOptions.Int("servers", 8, "servers", 1, 64);
        var layers = CliOptions.Int("layers", 64, "MoE layers", 1, 1024);
        var experts = CliOptions.Int("experts", 256, "experts per layer", 2, 4096);
        var topK = CliOptions.Int("top-k", 8, "experts per token (at most --experts)", 1, 4096);
        var memory = CliOptions.Double("memory", 0.3, "share of all experts' bytes each server holds", 0.0001, 1);
        var requests = CliOptions.Int("requests", 4, "synthetic requests per half (history, eval)", 1, 1000);
        var tokens = CliOptions.Int("tokens", 128, "tokens per request", 2, 100_000);
        var algorithms = CliOptions.Text("algorithms", "algorithms to run: all, or a comma-separated list", "all", valueName: "all|a,b");
        var json = CliOptions.Flag("json", "print the results as JSON");
        var command = new Command("bench", "solve times on seeded synthetic instances") { servers, layers, experts, topK, memory, requests, tokens, algorithms, json };
        command.SetAction((result, cancellationToken) =>
        {
            // Before the instance is generated, which takes up to a minute.
            var chosen = Algorithms(result.GetRequiredValue(algorithms));
            var simulation = PlacementSimulation.Synthetic(
                result.GetValue(servers), result.GetValue(layers), result.GetValue(experts), result.GetValue(topK), result.GetValue(memory),
                result.GetValue(requests), result.GetValue(tokens), cancellationToken);
            Console.Error.WriteLine(simulation.Description);
            PlacementReport.Write(Console.Out, simulation.Solve(chosen, cancellationToken), result.GetValue(json));
            return Task.FromResult(ExitCodes.Ok);
        });
        return command;
    }

    private static IReadOnlyList<IPlacementAlgorithm> Algorithms(string? text)
    {
        if (text is null or "all")
        {
            return PlacementAlgorithms.All;
        }

        try
        {
            return [.. PlacementAlgorithms.Chosen(List(text, "algorithms")).Select(PlacementAlgorithms.Create)];
        }
        catch (ArgumentException ex)
        {
            throw new UsageException($"--algorithms: {ex.Message}");
        }
    }

    private static double[] Numbers(string text, string option, int count, double min, double max)
    {
        var parts = List(text, option);
        if (parts.Count != count)
        {
            throw new UsageException($"--{option} needs {count} comma-separated values, one per server (got {parts.Count})");
        }

        return parts.Select(p => double.TryParse(p, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v >= min && v <= max
            ? v
            : throw new UsageException(string.Create(CultureInfo.InvariantCulture, $"--{option}: '{p}' is not a number from {min} to {max}"))).ToArray();
    }

    private static List<string> List(string text, string option)
    {
        var items = text.Split(',', StringSplitOptions.TrimEntries).ToList();
        return items.All(item => item.Length == 0) ? throw new UsageException($"--{option} is empty")
            : items.Contains("") ? throw new UsageException($"--{option} has an empty item: '{text}'") : items;
    }
}
