using System.CommandLine;
using DanceMoE.Cli.Commands;
using DanceMoE.Coordinator;
using DanceMoE.Coordinator.Saga;

namespace DanceMoE.Cli.Verbs;

/// <summary>
/// The grammar of the verbs whose bodies still read <see cref="Arguments"/> (see <see cref="LegacyBridge"/>): every option
/// they read, so that help and usage errors are the same as for the other verbs.
/// </summary>
public static class LegacyVerbs
{
    private const string Providers = "execution provider: auto, cuda or cpu";

    /// <summary><c>dancemoe edge</c>.</summary>
    public static Command Edge() => new Command("edge", "one edge server process, until it is stopped")
    {
        CliOptions.Text("id", "the edge's id (its queues are named after it)", required: true),
        CliOptions.Text("model", "exported model, or a checkpoint (exported once into the state folder)", required: true, valueName: "DIR"),
        CliOptions.Int("memory-mb", 1024, "memory budget for experts, MiB", 1, 1_048_576),
        CliOptions.Text("placement", "placement file, or 'uniform' (with --uniform-over)", valueName: "FILE|uniform"),
        CliOptions.Text("uniform-over", "edges to spread the experts over with --placement uniform", valueName: "ID,ID,..."),
        CliOptions.Choice("provider", Providers, "auto", "cuda", "cpu"),
        CliOptions.Int("threads", 1, "intra-op threads per session (0: ONNX Runtime's default)", 0, 64),
        CliOptions.Int("deadline-ms", 5000, "deadline of a remote expert call", 50, 600_000),
        CliOptions.Double("link-delay-ms", 0, "emulated one-way link delay", 0, 10_000),
        CliOptions.Double("link-mbps", 0, "emulated link bandwidth (0: unlimited)", 0, 1_000_000),
        CliOptions.Double("load-ms-per-mb", 0, "emulated expert load time per MB", 0, 1_000_000),
        CliOptions.Double("heartbeat-seconds", 2, "heartbeat interval", 0.1, 3600),
        CliOptions.Flag("no-traces", "do not record routing traces"),
        CliOptions.Text("trace-spill-dir", "where traces wait while PostgreSQL is unreachable", valueName: "DIR"),
        CliOptions.Text("ready-file", "file to write the process id to once the edge serves", valueName: "FILE"),
    }.Bridge(new EdgeCommand());

    /// <summary><c>dancemoe coordinator</c>; the defaults are the options classes' own.</summary>
    public static Command Coordinator()
    {
        var job = new PlacementJobOptions();
        var membership = new MembershipOptions();
        var migration = new MigrationOptions();
        return new Command("coordinator", "membership, placement registry, the placement job and the migration saga, until stopped (--model DIR, or --layers, --experts, --top-k and --expert-bytes)")
        {
            CliOptions.Text("model", "exported model whose architecture the placement job plans for", valueName: "DIR"),
            CliOptions.OptionalInt("layers", "MoE layers (instead of --model)", 1, 4096),
            CliOptions.OptionalInt("experts", "experts per layer (instead of --model)", 1, 65536),
            CliOptions.OptionalInt("top-k", "experts per token (instead of --model)", 1, 1024),
            CliOptions.OptionalLong("expert-bytes", "bytes of one expert's weights (instead of --model)", 1),
            CliOptions.Text("algorithm", "placement algorithm: dancemoe, optimal, eplb, redundance, uniform or latency", job.Algorithm),
            CliOptions.Text("cron", "Quartz cron schedule of the placement job", job.Cron),
            CliOptions.Double("window-minutes", job.WindowMinutes, "routing history the job reads", 1, 7 * 24 * 60),
            CliOptions.Double("half-life-minutes", job.HalfLifeMinutes, "half-life of older routing events (0: no decay)", 0, 7 * 24 * 60),
            CliOptions.Double("horizon-s", job.HorizonSeconds, "time over which a migration must pay for itself", 1, 7 * 24 * 3600),
            CliOptions.Double("bandwidth-mbps", job.BandwidthMbps, "link bandwidth the planner assumes", 0.001, 1e6),
            CliOptions.Double("rtt-ms", job.RttMs, "link round-trip time the planner assumes", 0, 10_000),
            CliOptions.Double("heartbeat-seconds", membership.HeartbeatSeconds, "edges' heartbeat interval", 0.1, 3600),
            CliOptions.Int("missed-heartbeats", membership.MissedHeartbeats, "missed heartbeats before an edge is down", 1, 1000),
            CliOptions.Double("load-timeout-s", migration.LoadTimeoutSeconds, "how long an edge may take to load its experts", 0.1, 3600),
            CliOptions.Double("unload-timeout-s", migration.UnloadTimeoutSeconds, "how long an edge may take to unload", 0.1, 3600),
            CliOptions.Double("activation-timeout-s", migration.ActivationTimeoutSeconds, "how long the edges may take to switch placement", 0.1, 3600),
            CliOptions.Double("drain-ms", migration.DrainMilliseconds, "wait for requests in flight before unloading", 0, 600_000),
            CliOptions.Int("migration-retries", migration.Retries, "retries of a failed migration step", 0, 10),
            CliOptions.Int("timeout-scan-ms", migration.TimeoutScanMilliseconds, "how often the saga looks for timed-out migrations", 50, 60_000),
            CliOptions.Text("ready-file", "file to write the process id to once the coordinator serves", valueName: "FILE"),
        }.Bridge(new CoordinatorCommand());
    }

    /// <summary><c>dancemoe demo</c>.</summary>
    public static Command Demo() => new Command("demo", "the closed loop: a cluster, the coordinator, a migration, the same answers with more local expert calls")
    {
        CliOptions.Flag("no-services", "do not start the local RabbitMQ and PostgreSQL"),
        CliOptions.Text("model", "exported model or checkpoint (default: onnx/default, else a tiny seeded one)", valueName: "DIR"),
        CliOptions.Int("max-tokens", 48, "tokens per answer", 1, 512),
        CliOptions.OptionalInt("memory-mb", "memory budget per edge, MiB (default: what the uniform start needs)", 1, 1_048_576),
        CliOptions.Flag("keep", "leave the cluster running afterwards"),
    }.Bridge(new DemoCommand());

    /// <summary><c>dancemoe bench expert|cluster|traces|shift</c>.</summary>
    public static Command Bench()
    {
        var bench = new BenchCommand();
        return new Command("bench", "benchmarks")
        {
            new Command("expert", "latency and GFLOP/s of one expert next to a plain matrix product of the same size")
            {
                CliOptions.Text("model", "exported model directory", required: true, valueName: "DIR"),
                CliOptions.Int("layer", 0, "layer of the expert", 0),
                CliOptions.Int("expert", 0, "expert in that layer", 0),
                CliOptions.Int("iterations", 50, "runs per batch size (the median is reported)", 1, 100_000),
                CliOptions.Choice("provider", Providers, "auto", "cuda", "cpu"),
                CliOptions.Int("threads", 0, "intra-op threads (0: ONNX Runtime's default)", 0, 1024),
                CliOptions.Int("inter-threads", 0, "inter-op threads (0: ONNX Runtime's default)", 0, 1024),
            }.Bridge(bench, "expert"),
            new Command("cluster", "monolithic vs a local cluster, with and without link emulation, and the remote expert path's overhead")
            {
                CliOptions.Text("model", "exported model or checkpoint (default: onnx/default, else a tiny seeded one)", valueName: "DIR"),
                CliOptions.Int("edges", 3, "edges of the cluster", 2, 16),
                CliOptions.Int("requests", 6, "requests per run", 1, 1000),
                CliOptions.Int("max-tokens", 24, "tokens per answer", 1, 512),
                CliOptions.Double("link-delay-ms", 1, "emulated one-way link delay of the emulated run", 0, 10_000),
                CliOptions.Double("link-mbps", 500, "emulated link bandwidth of the emulated run", 0, 1_000_000),
                CliOptions.Int("round-trips", 200, "round trips of the overhead measurement", 10, 100_000),
                CliOptions.Flag("json", "print JSON"),
            }.Bridge(bench, "cluster"),
            new Command("traces", "rows/s through the trace writer into PostgreSQL, and a local cluster's tokens/s with tracing off and on")
            {
                CliOptions.Int("rows", 300_000, "routing events to write", 1000, 100_000_000),
                CliOptions.Text("model", "exported model or checkpoint (default: onnx/default, else a tiny seeded one)", valueName: "DIR"),
                CliOptions.Int("edges", 3, "edges of the cluster", 2, 16),
                CliOptions.Int("requests", 6, "requests", 1, 1000),
                CliOptions.Int("max-tokens", 24, "tokens per answer", 1, 512),
                CliOptions.Flag("json", "print JSON"),
            }.Bridge(bench, "traces"),
            new Command("shift", "the closed loop in one run: a workload shift, the placement job, the migration under load")
            {
                CliOptions.Text("model", "model with held-out samples of its domains (default: onnx/default)", valueName: "DIR"),
                CliOptions.Int("requests-per-phase", 10, "requests per edge in each phase", 1, 10_000),
                CliOptions.Double("warmup-s", 10, "warm-up before measuring", 0, 3600),
                CliOptions.Int("max-tokens", 32, "tokens per answer", 1, 512),
                CliOptions.Int("prompt-bytes", 160, "bytes of each prompt", 8, 4096),
                CliOptions.Int("memory-mb", 8, "memory budget per edge, MiB", 1, 1_048_576),
                CliOptions.Int("history-bytes", 8192, "bytes of history per domain", 256, 100_000_000),
                CliOptions.Double("window-minutes", 1, "routing history the placement job reads", 1, 7 * 24 * 60),
                CliOptions.Double("half-life-minutes", 1, "half-life of older routing events", 0, 7 * 24 * 60),
                CliOptions.Int("deadline-ms", 10_000, "deadline of a remote expert call", 50, 600_000),
                CliOptions.Double("request-timeout-s", 120, "timeout of one request", 1, 3600),
                CliOptions.Double("migration-timeout-s", 300, "timeout of the migration", 1, 24 * 3600),
                CliOptions.Choice("provider", Providers, "auto", "cuda", "cpu"),
                CliOptions.Flag("keep-logs", "keep the processes' logs"),
                CliOptions.Flag("json", "print JSON"),
            }.Bridge(bench, "shift"),
        };
    }

    /// <summary><c>dancemoe cluster up|down|status</c>.</summary>
    public static Command Cluster()
    {
        var cluster = new ClusterCommand();
        return new Command("cluster", "a local cluster of edge processes on this machine, edge-1..edge-N")
        {
            new Command("up", "start the edges")
            {
                CliOptions.Int("edges", 3, "edges to start", 1, 64),
                CliOptions.Text("model", "exported model or checkpoint (default: onnx/default, else a tiny seeded one)", valueName: "DIR"),
                CliOptions.Text("placement", "placement file, or 'uniform'", valueName: "uniform|FILE"),
                CliOptions.Text("memory-mb", "memory budget, MiB: one for all edges, or one per edge", "1024", valueName: "A,B,C"),
                CliOptions.Choice("provider", Providers, "auto", "cuda", "cpu"),
                CliOptions.Int("threads", 1, "intra-op threads per session", 0, 64),
                CliOptions.Int("deadline-ms", 5000, "deadline of a remote expert call", 50, 600_000),
                CliOptions.Double("link-delay-ms", 0, "emulated one-way link delay", 0, 10_000),
                CliOptions.Double("link-mbps", 0, "emulated link bandwidth (0: unlimited)", 0, 1_000_000),
                CliOptions.Int("start-timeout-seconds", 120, "how long the edges may take to start", 1, 3600),
                CliOptions.Flag("no-traces", "do not record routing traces"),
            }.Bridge(cluster, "up"),
            new Command("down", "stop the edges").Bridge(cluster, "down"),
            new Command("status", "the running edges").Bridge(cluster, "status"),
        };
    }

    /// <summary><c>dancemoe placement run-now</c>.</summary>
    public static Command PlacementRunNow() => new Command("run-now", "ask the coordinator to run its placement job now and wait for its decision")
    {
        CliOptions.Flag("no-wait", "return once the command is sent"),
        CliOptions.Double("timeout-s", 300, "how long to wait for the decision", 1, 86_400),
        CliOptions.Flag("json", "print the decision as JSON"),
    }.Bridge(Commands.PlacementRunNow.RunAsync, "run-now");
}
