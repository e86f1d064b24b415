using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using DanceMoE.Cli.Verbs;

namespace DanceMoE.Cli.Commands;

/// <summary><c>dancemoe cluster up|down|status</c>: the <see cref="LocalCluster"/> of edge processes on this machine.</summary>
public static class ClusterCommand
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>The <c>cluster</c> verb and its sub-verbs.</summary>
    public static Command Create()
    {
        var down = new Command("down", "stop the edges");
        down.SetAction(async (_, cancellationToken) =>
        {
            var stopped = await LocalCluster.DownAsync(cancellationToken, Console.Error.WriteLine).ConfigureAwait(false);
            Console.WriteLine(stopped.Count == 0 ? "no edge was running" : $"stopped {string.Join(", ", stopped)}");
            return ExitCodes.Ok;
        });
        var json = CliOptions.Flag("json", "print a JSON array: id, pid, state, metrics_url, ready_url of each edge");
        var status = new Command("status", "the edges: running, or down when the process has exited") { json };
        status.SetAction(result =>
        {
            if (result.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(LocalCluster.EdgesWithPorts().Select(e => e.ToJson()), Indented));
                return ExitCodes.Ok;
            }

            foreach (var edge in LocalCluster.EdgesWithPorts())
            {
                Console.WriteLine(edge.ToText());
            }

            return ExitCodes.Ok;
        });
        return new Command("cluster", "a local cluster of edge processes on this machine, edge-1..edge-N") { Up(), down, status };
    }

    private static Command Up()
    {
        var edges = CliOptions.Int("edges", 3, "edges to start", 1, 64);
        var model = CliOptions.Text("model", "exported model or checkpoint (default: onnx/default, else a tiny seeded one)", valueName: "DIR");
        var placement = CliOptions.Text("placement", "placement file, or 'uniform'", valueName: "uniform|FILE");
        var memoryMb = CliOptions.Text("memory-mb", "memory budget, MiB: one for all edges, or one per edge", "1024", valueName: "A,B,C");
        var provider = CliOptions.Provider();
        var threads = CliOptions.Int("threads", 1, "intra-op threads per session", 0, Environment.ProcessorCount);
        var deadline = CliOptions.Int("deadline-ms", 5000, "deadline of a remote expert call", 50, 600_000);
        var linkDelay = CliOptions.Double("link-delay-ms", 0, "emulated one-way link delay", 0, 10_000);
        var linkMbps = CliOptions.Double("link-mbps", 0, "emulated link bandwidth (0: unlimited)", 0, 1_000_000);
        var startTimeout = CliOptions.Int("start-timeout-seconds", 120, "how long the edges may take to start", 1, 3600);
        var noTraces = CliOptions.Flag("no-traces", "do not record routing traces");
        var metricsPortBase = CliOptions.Int("metrics-port-base", LocalEnvironment.MetricsPortBase, "edge-i serves /metrics, /healthz, /readyz on 127.0.0.1 at this port + i - 1 (default: $DANCEMOE_METRICS_PORT_BASE, else 9470)", 1024, 65000);
        var noExpertMetrics = CliOptions.Flag("no-expert-metrics", "no per-expert activation counters on /metrics");
        var command = new Command("up", "start the edges")
        {
            edges, model, placement, memoryMb, provider, threads, deadline, linkDelay, linkMbps, startTimeout, noTraces, metricsPortBase, noExpertMetrics,
        };
        command.SetAction((result, cancellationToken) => UpAsync(
            new ClusterSpec
            {
                Edges = result.GetValue(edges),
                Model = result.GetValue(model),
                Placement = result.GetValue(placement),
                MemoryMb = MemoryBudgets(result.GetRequiredValue(memoryMb), result.GetValue(edges)),
                Provider = result.GetRequiredValue(provider),
                Threads = result.GetValue(threads),
                DeadlineMs = result.GetValue(deadline),
                LinkDelayMs = result.GetValue(linkDelay),
                LinkMbps = result.GetValue(linkMbps),
                StartTimeoutSeconds = result.GetValue(startTimeout),
                Traces = !result.GetValue(noTraces),
                MetricsPortBase = result.GetValue(metricsPortBase),
                ExpertMetrics = !result.GetValue(noExpertMetrics),
            },
            cancellationToken));
        return command;
    }

    private static async Task<int> UpAsync(ClusterSpec spec, CancellationToken cancellationToken)
    {
        var edges = await LocalCluster.UpAsync(spec, Console.Error.WriteLine, cancellationToken).ConfigureAwait(false);
        foreach (var e in edges)
        {
            Console.WriteLine($"{e.Id} pid {e.Pid}: {e.Experts} experts, budget {e.MemoryMb} MiB, metrics :{e.MetricsPort}, log {e.LogFile}");
        }

        return ExitCodes.Ok;
    }

    /// <summary><c>--memory-mb</c>: one budget for all <paramref name="edges"/>, or one per edge.</summary>
    private static List<int> MemoryBudgets(string text, int edges)
    {
        var memory = text.Split(',')
            .Select(m => int.TryParse(m, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v > 0
                ? v
                : throw new UsageException($"--memory-mb takes positive numbers separated by commas (got '{m}')"))
            .ToList();
        if (memory.Count != 1 && memory.Count != edges)
        {
            throw new UsageException($"--memory-mb has {memory.Count} values for {edges} edges: give one for all, or one per edge");
        }

        return memory;
    }
}
