using System.Globalization;

namespace DanceMoE.Cli.Commands;

/// <summary><c>dancemoe cluster up|down|status</c>: the <see cref="LocalCluster"/> of edge processes on this machine.</summary>
public sealed class ClusterCommand : ICliCommand
{
    public string Verb => "cluster";

    public string Usage =>
        "cluster up --edges N [--model DIR] [--placement uniform|FILE] [--memory-mb A,B,C] [--link-delay-ms D] [--link-mbps B] [--threads 1] [--deadline-ms 5000] [--no-traces] | cluster down | cluster status";

    public async Task<int> RunAsync(Arguments args, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        var sub = args.Positional0("sub-command (up, down or status)");
        switch (sub)
        {
            case "up":
                var spec = ReadSpec(args);
                args.EnsureAllUsed(1);
                var edges = await LocalCluster.UpAsync(spec, Console.Error.WriteLine, cancellationToken).ConfigureAwait(false);
                foreach (var e in edges)
                {
                    Console.WriteLine($"{e.Id} pid {e.Pid}: {e.Experts} experts, budget {e.MemoryMb} MiB, log {e.LogFile}");
                }

                return ExitCodes.Ok;
            case "down":
                args.EnsureAllUsed(1);
                var stopped = await LocalCluster.DownAsync(cancellationToken).ConfigureAwait(false);
                Console.WriteLine(stopped.Count == 0 ? "no edge was running" : $"stopped {string.Join(", ", stopped)}");
                return ExitCodes.Ok;
            case "status":
                args.EnsureAllUsed(1);
                foreach (var (id, pid) in LocalCluster.RunningEdges())
                {
                    Console.WriteLine($"{id} pid {pid} running");
                }

                return ExitCodes.Ok;
            default:
                throw new UsageException($"unknown sub-command '{sub}'");
        }
    }

    /// <summary>What <c>cluster up</c> starts, from its command line.</summary>
    public static ClusterSpec ReadSpec(Arguments args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var edges = args.Int("edges", 3, 1, 64);
        var memory = (args.Option("memory-mb") ?? "1024").Split(',')
            .Select(m => int.TryParse(m, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v > 0
                ? v
                : throw new UsageException($"--memory-mb takes positive numbers separated by commas (got '{m}')"))
            .ToList();
        if (memory.Count != 1 && memory.Count != edges)
        {
            throw new UsageException($"--memory-mb has {memory.Count} values for {edges} edges: give one for all, or one per edge");
        }

        return new ClusterSpec
        {
            Edges = edges,
            Model = args.Option("model"),
            Placement = args.Option("placement"),
            MemoryMb = memory,
            Provider = args.Option("provider") ?? "auto",
            Threads = args.Int("threads", 1, 0, 64),
            DeadlineMs = args.Int("deadline-ms", 5000, 50, 600_000),
            LinkDelayMs = args.Double("link-delay-ms", 0, 0, 10_000),
            LinkMbps = args.Double("link-mbps", 0, 0, 1_000_000),
            StartTimeoutSeconds = args.Int("start-timeout-seconds", 120, 1, 3600),
            Traces = !args.Flag("no-traces"),
        };
    }
}
