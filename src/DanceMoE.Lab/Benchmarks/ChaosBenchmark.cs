using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using DanceMoE.Edge;
using DanceMoE.Hosting;
using DanceMoE.Model;
using DanceMoE.Operations;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>
/// <c>dancemoe bench chaos</c>: three edges (every expert on two of them) and a coordinator on a virtual host and database
/// of their own, under a bounded load; one fault at a time (an edge killed and restarted, the broker restarted, one broker
/// node killed, PostgreSQL stopped, the coordinator killed mid-migration and restarted). Per fault: what failed and why,
/// whether every edge answered again without help and how soon, and whether every routing row of every answered request landed once.
/// </summary>
public static class ChaosBenchmark
{
    public const string EdgeKill = "edge-kill";
    public const string BrokerRestart = "broker-restart";
    public const string BrokerNodeKill = "broker-node-kill";
    public const string PostgresStop = "postgres-stop";
    public const string CoordinatorKill = "coordinator-kill";

    public static readonly IReadOnlyList<string> Faults = [EdgeKill, BrokerRestart, BrokerNodeKill, PostgresStop, CoordinatorKill];

    private const string FarCron = "0 0 0 1 1 ? 2099";
    private const string KilledEdge = "edge-2";

    private static readonly string[] Edges = ["edge-1", "edge-2", "edge-3"];

    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    /// <summary>Runs the faults in turn; the report (a table, or JSON) goes to <paramref name="output"/>. False when a fault broke a promise.</summary>
    public static async Task<bool> RunAsync(ChaosBenchmarkSettings settings, TextWriter output, TextWriter log, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(log);
        var unknown = settings.Faults.Except(Faults, StringComparer.Ordinal).ToList();
        if (unknown.Count > 0)
        {
            throw new InvalidSettingsException($"unknown fault {string.Join(", ", unknown)}: the faults are {string.Join(", ", Faults)}");
        }

        LabChecks.EnsureNoCluster();
        var total = Stopwatch.StartNew();
        void Log(string line) => log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"bench chaos [{total.Elapsed.TotalSeconds,5:F1} s]: {line}"));
        var exported = ModelCatalog.ResolveExported(settings.Model, Log);
        var manifest = ModelManifest.Load(exported);
        var a = manifest.Architecture;
        var nodes = RabbitMqOptions.Parse(LocalEnvironment.RabbitMqUri).Nodes.Count;
        Log($"RabbitMQ: {nodes} node(s) in {LocalEnvironment.Redact(LocalEnvironment.RabbitMqUri)}");

        await using var environment = await ShiftEnvironment.CreateAsync(Log, cancellationToken).ConfigureAwait(false);
        var results = new List<ChaosResult>();
        var finished = false;
        try
        {
            // Every expert on two edges: a killed edge's experts are still served by their other replica.
            var assignments = PlacementFile.Uniform(1, a.NumLayers, a.NumExperts, Edges).Assignments
                .Select(x => x with { Servers = [x.Servers[0], Edges[(Array.IndexOf(Edges, x.Servers[0]) + 1) % Edges.Length]] });
            var placementFile = Path.Combine(environment.Directory, "placement.json");
            PlacementFile.Save(placementFile, new EdgePlacement(1, [.. assignments]));
            var expertMb = (double)DanceMoE.Coordinator.ModelShape.Of(manifest).ExpertBytes / (1 << 20);
            var memoryMb = (int)Math.Ceiling(expertMb * ((a.NumLayers * a.NumExperts * 2 / Edges.Length) + settings.SpareExperts)) + 1;
            string[] EdgeArguments(string edge) =>
            [
                "edge", "--id", edge, "--model", exported, "--memory-mb", memoryMb.ToString(CultureInfo.InvariantCulture), "--placement", placementFile,
                "--provider", "cpu", "--threads", "1", "--deadline-ms", settings.DeadlineMs.ToString(CultureInfo.InvariantCulture),
                "--load-ms-per-mb", settings.LoadMsPerMb.ToString(CultureInfo.InvariantCulture), "--trace-spill-dir", Path.Combine(environment.Directory, "spill-" + edge),
            ];
            string[] coordinatorArguments = ["coordinator", "--model", exported, "--cron", FarCron, "--window-minutes", "10", "--half-life-minutes", "10"];
            environment.Start("coordinator", coordinatorArguments);
            foreach (var edge in Edges)
            {
                environment.Start(edge, EdgeArguments(edge));
            }

            Log($"virtual host {environment.VirtualHost}, database {environment.Database}; coordinator and {Edges.Length} edges ({memoryMb} MiB each, every expert on two) starting...");
            await environment.WaitReadyAsync(TimeSpan.FromSeconds(300), cancellationToken).ConfigureAwait(false);

            await using var client = await BusClient.StartAsync(environment.RabbitMqUri, cancellationToken).ConfigureAwait(false);
            var prompts = LoadBenchmark.Prompts;
            var timeouts = new ChaosTimeouts(settings.AttemptTimeout, settings.RequestTimeout);
            var run = new ChaosRun(settings, environment, client, prompts, timeouts, a.NumLayers, Log);
            foreach (var fault in settings.Faults)
            {
                var result = fault switch
                {
                    EdgeKill => await run.RunAsync(fault, async ct =>
                    {
                        environment.Kill(KilledEdge);
                        await Task.Delay(TimeSpan.FromSeconds(1), ct).ConfigureAwait(false);
                        environment.Start(KilledEdge, EdgeArguments(KilledEdge));
                        return $"kill -9 {KilledEdge}, restarted 1 s later";
                    }, cancellationToken).ConfigureAwait(false),
                    BrokerRestart => await run.RunAsync(fault, async ct =>
                    {
                        if (nodes == 1)
                        {
                            await ChaosServices.StopBrokerAsync(ct).ConfigureAwait(false);
                            await ChaosServices.StartBrokerAsync(ct).ConfigureAwait(false);
                            return "the RabbitMQ node stopped and started again";
                        }

                        // A cluster restarts as operators restart it: one node at a time, the others serving meanwhile.
                        for (var node = 1; node <= nodes; node++)
                        {
                            await ChaosServices.StopNodeAsync(node, ct).ConfigureAwait(false);
                            await ChaosServices.StartNodeAsync(node, ct).ConfigureAwait(false);
                        }

                        return $"rolling restart of the {nodes} RabbitMQ nodes, one at a time";
                    }, cancellationToken).ConfigureAwait(false),
                    BrokerNodeKill when nodes < 3 => ChaosResult.Skipped(fault,
                        $"not run: RabbitMQ has {nodes} node(s) here; a node kill needs three (./dancemoe services up --rabbitmq-nodes 3)"),
                    BrokerNodeKill => await run.RunAsync(fault, async ct =>
                    {
                        // The first node: every client connected there first, so every connection must fail over.
                        await ChaosServices.KillNodeAsync(1, ct).ConfigureAwait(false);
                        return "kill -9 RabbitMQ node 1 of 3 (restarted after the measurement)";
                    }, cancellationToken, after: ct => ChaosServices.StartNodeAsync(1, ct)).ConfigureAwait(false),
                    PostgresStop => await run.RunAsync(fault, async ct =>
                    {
                        await ChaosServices.StopPostgresAsync(ct).ConfigureAwait(false);
                        await Task.Delay(settings.PostgresDowntime, ct).ConfigureAwait(false);
                        await ChaosServices.StartPostgresAsync(ct).ConfigureAwait(false);
                        return string.Create(CultureInfo.InvariantCulture, $"PostgreSQL stopped for {settings.PostgresDowntime.TotalSeconds:F0} s");
                    }, cancellationToken).ConfigureAwait(false),
                    _ => await run.CoordinatorKillAsync(coordinatorArguments, cancellationToken).ConfigureAwait(false),
                };
                results.Add(result);
                Log($"{fault}: {result.Summary()}");
            }

            finished = true;
        }
        finally
        {
            // The processes' logs are what a failed fault can be diagnosed from.
            environment.KeepDirectory = !finished || settings.KeepLogs || results.Any(r => !r.Kept);
            Log("stopping the edges and the coordinator, dropping the database and the virtual host...");
        }

        output.WriteLine(settings.Json ? JsonSerializer.Serialize(results, Json) : Text(results));
        return results.All(r => r.Kept);
    }

    private static string Text(IReadOnlyList<ChaosResult> results)
    {
        var inv = CultureInfo.InvariantCulture;
        var s = new System.Text.StringBuilder();
        s.AppendLine("fault             requests  completed  failed  in flight at fault  hung  recovery s  rows landed/expected  duplicates  migration");
        foreach (var r in results)
        {
            s.AppendLine(inv,
                $"{r.Fault,-17} {r.Requests,8} {r.Completed,10} {r.Failed,7} {r.InFlightAtFault,19} {r.Hung,5} {(r.RecoveryS is { } x ? x.ToString("F1", inv) : "-"),11} {$"{r.RowsLanded}/{r.RowsExpected}",21} {r.DuplicateRows,11}  {r.Migration}");
        }

        foreach (var r in results)
        {
            s.AppendLine(inv, $"{r.Fault}: {r.Action}; recovered without help: {(r.Recovered ? "yes" : "NO")}");
            foreach (var error in r.Errors)
            {
                s.AppendLine(inv, $"  failed: {error}");
            }
        }

        return s.ToString().TrimEnd();
    }
}

/// <summary>What <c>bench chaos</c> runs.</summary>
public sealed record ChaosBenchmarkSettings
{
    public string? Model { get; init; }
    public IReadOnlyList<string> Faults { get; init; } = ChaosBenchmark.Faults;
    public int MaxTokens { get; init; } = 12;

    /// <summary>A new request to every edge this often, at most <see cref="PerEdge"/> in flight per edge.</summary>
    public TimeSpan Interval { get; init; } = TimeSpan.FromMilliseconds(500);
    public int PerEdge { get; init; } = 2;

    /// <summary>Load before the fault, and after every edge answered again.</summary>
    public TimeSpan Before { get; init; } = TimeSpan.FromSeconds(5);
    public TimeSpan After { get; init; } = TimeSpan.FromSeconds(5);
    public TimeSpan PostgresDowntime { get; init; } = TimeSpan.FromSeconds(20);
    public TimeSpan AttemptTimeout { get; init; } = TimeSpan.FromSeconds(20);
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(90);
    public TimeSpan RecoveryTimeout { get; init; } = TimeSpan.FromSeconds(120);
    public TimeSpan RowsTimeout { get; init; } = TimeSpan.FromSeconds(90);
    public int DeadlineMs { get; init; } = 3000;

    /// <summary>Slow expert loads, so the coordinator is killed while its migration runs.</summary>
    public double LoadMsPerMb { get; init; } = 2000;
    public int SpareExperts { get; init; } = 8;
    public bool KeepLogs { get; init; }
    public bool Json { get; init; }
}

/// <summary>One fault's figures (<c>bench chaos --json</c> prints an array of them).</summary>
public sealed record ChaosResult
{
    public string Fault { get; init; } = "";
    public string Action { get; init; } = "";
    public int Requests { get; init; }
    public int Completed { get; init; }
    public int Failed { get; init; }
    public int InFlightAtFault { get; init; }
    public int Hung { get; init; }

    /// <summary>Seconds from the end of the fault (the process restarted, the node killed, the service back) until every edge answered a request sent since.</summary>
    public double? RecoveryS { get; init; }
    public bool Recovered { get; init; }
    public double FaultS { get; init; }
    public long RowsExpected { get; init; }
    public long RowsLanded { get; init; }
    public long DuplicateRows { get; init; }
    public string Migration { get; init; } = "none";
    public IReadOnlyList<string> Errors { get; init; } = [];

    /// <summary>Whether the fault kept the promises: nothing hung, failures only among requests in flight, recovered within 30 s, every row once.</summary>
    public bool Kept => Hung == 0 && Failed <= InFlightAtFault && Recovered && RecoveryS is null or <= 30 && RowsLanded == RowsExpected && DuplicateRows == 0
        && !Migration.StartsWith("Failed", StringComparison.Ordinal);

    internal static ChaosResult Skipped(string fault, string why) => new() { Fault = fault, Action = why, Recovered = true, Migration = "none" };

    internal string Summary() => string.Create(CultureInfo.InvariantCulture,
        $"{Completed}/{Requests} completed, {Failed} failed ({InFlightAtFault} in flight at the fault), {Hung} hung, recovery {(RecoveryS is { } r ? r.ToString("F1", CultureInfo.InvariantCulture) + " s" : "none")}, rows {RowsLanded}/{RowsExpected}, {DuplicateRows} duplicates, migration {Migration}");
}
