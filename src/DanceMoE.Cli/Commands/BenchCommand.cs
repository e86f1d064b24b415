using DanceMoE.Lab.Benchmarks;

namespace DanceMoE.Cli.Commands;

/// <summary><c>dancemoe bench expert|cluster|traces|shift</c>: the benchmarks of the lab, from the command line.</summary>
public sealed class BenchCommand : ICliCommand
{
    private const string ExpertUsage = "bench expert --model DIR [--layer 0] [--expert 0] [--iterations 50]";

    private const string ClusterUsage =
        "bench cluster [--model DIR] [--edges 3] [--requests 6] [--max-tokens 24] [--link-delay-ms 1] [--link-mbps 500] [--round-trips 200] [--json]";

    private const string TracesUsage = "bench traces [--rows 300000] [--model DIR] [--edges 3] [--requests 6] [--max-tokens 24] [--json]";

    private const string ShiftUsage =
        "bench shift [--model DIR] [--requests-per-phase 10 (per edge)] [--warmup-s 10] [--max-tokens 32] [--prompt-bytes 160] [--memory-mb 8] [--history-bytes 8192] "
        + "[--window-minutes 1] [--half-life-minutes 1] [--deadline-ms 10000] [--request-timeout-s 120] [--migration-timeout-s 300] [--provider auto] [--keep-logs] [--json]";

    public string Verb => "bench";

    public string Usage => $"{ExpertUsage} {InferenceArguments.Usage} | {ClusterUsage} | {TracesUsage} | {ShiftUsage}";

    public async Task<int> RunAsync(Arguments args, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        var action = args.Positional0("action (expert, cluster, traces, shift)");
        switch (action)
        {
            case "expert":
                ExpertBenchmark.Run(ReadExpert(args), Console.Out, Console.Error, cancellationToken);
                return ExitCodes.Ok;
            case "cluster":
                await ClusterBenchmark.RunAsync(ReadCluster(args), Console.Out, Console.Error, cancellationToken).ConfigureAwait(false);
                return ExitCodes.Ok;
            case "traces":
                await TracesBenchmark.RunAsync(ReadTraces(args), Console.Out, Console.Error, cancellationToken).ConfigureAwait(false);
                return ExitCodes.Ok;
            case "shift":
                var shift = await ShiftBenchmark.RunAsync(ReadShift(args), Console.Out, Console.Error, cancellationToken).ConfigureAwait(false);
                return shift.Succeeded ? ExitCodes.Ok : ExitCodes.Failed;
            default:
                throw new UsageException($"unknown action '{action}' (expert, cluster, traces, shift)");
        }
    }

    private static ExpertBenchmarkSettings ReadExpert(Arguments args)
    {
        var settings = new ExpertBenchmarkSettings
        {
            ModelDirectory = args.Required("model"),
            Layer = args.Int("layer", 0, 0),
            Expert = args.Int("expert", 0, 0),
            Iterations = args.Int("iterations", 50, 1, 100_000),
            Inference = InferenceArguments.Read(args),
        };
        args.EnsureAllUsed(1);
        return settings;
    }

    private static ClusterBenchmarkSettings ReadCluster(Arguments args)
    {
        var settings = new ClusterBenchmarkSettings
        {
            Edges = args.Int("edges", 3, 2, 16),
            Requests = args.Int("requests", 6, 1, 1000),
            MaxTokens = args.Int("max-tokens", 24, 1, 512),
            LinkDelayMs = args.Double("link-delay-ms", 1, 0, 10_000),
            LinkMbps = args.Double("link-mbps", 500, 0, 1_000_000),
            RoundTrips = args.Int("round-trips", 200, 10, 100_000),
            Model = args.Option("model"),
            Json = args.Flag("json"),
        };
        args.EnsureAllUsed(1);
        return settings;
    }

    private static TracesBenchmarkSettings ReadTraces(Arguments args)
    {
        var settings = new TracesBenchmarkSettings
        {
            Rows = args.Int("rows", 300_000, 1000, 100_000_000),
            Edges = args.Int("edges", 3, 2, 16),
            Requests = args.Int("requests", 6, 1, 1000),
            MaxTokens = args.Int("max-tokens", 24, 1, 512),
            Model = args.Option("model"),
            Json = args.Flag("json"),
        };
        args.EnsureAllUsed(1);
        return settings;
    }

    private static ShiftBenchmarkSettings ReadShift(Arguments args)
    {
        var settings = new ShiftBenchmarkSettings
        {
            Model = args.Option("model"),
            RequestsPerEdge = args.Int("requests-per-phase", 10, 1, 10_000),
            Warmup = TimeSpan.FromSeconds(args.Double("warmup-s", 10, 0, 3600)),
            MaxTokens = args.Int("max-tokens", 32, 1, 512),
            PromptBytes = args.Int("prompt-bytes", 160, 8, 4096),
            MemoryMb = args.Int("memory-mb", 8, 1, 1_048_576),
            HistoryBytes = args.Int("history-bytes", 8192, 256, 100_000_000),
            WindowMinutes = args.Double("window-minutes", 1, 1, 7 * 24 * 60),
            HalfLifeMinutes = args.Double("half-life-minutes", 1, 0, 7 * 24 * 60),
            DeadlineMs = args.Int("deadline-ms", 10_000, 50, 600_000),
            RequestTimeout = TimeSpan.FromSeconds(args.Double("request-timeout-s", 120, 1, 3600)),
            MigrationTimeout = TimeSpan.FromSeconds(args.Double("migration-timeout-s", 300, 1, 24 * 3600)),
            Provider = args.Option("provider") ?? "auto",
            KeepLogs = args.Flag("keep-logs"),
            Json = args.Flag("json"),
        };
        args.EnsureAllUsed(1);
        return settings;
    }
}
