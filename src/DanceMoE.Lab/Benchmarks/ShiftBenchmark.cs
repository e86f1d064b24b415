using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using DanceMoE.Coordinator;
using DanceMoE.Data;
using DanceMoE.Edge;
using DanceMoE.Hosting;
using DanceMoE.Model;
using DanceMoE.Model.Locality;
using DanceMoE.Operations;
using DanceMoE.Placement;
using Npgsql;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>
/// <c>dancemoe bench shift</c>: the closed loop in one run. Its own virtual host, database, edges (edge i serves
/// domain i of the default model, placement computed for that workload) and coordinator; continuous client load; the
/// workloads rotate; the placement job runs now and its migration saga moves experts while the load goes on; local
/// ratio and per-token latency before the shift, after it, during the migration and after it.
/// </summary>
public static class ShiftBenchmark
{
    public const string Before = "before";
    public const string AfterShift = "after_shift";
    public const string DuringMigration = "during_migration";
    public const string AfterMigration = "after_migration";
    internal const string WarmupPhase = "warmup";

    /// <summary>Far enough away that only run-now fires the placement job.</summary>
    private const string FarCron = "0 0 0 1 1 ? 2099";

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    private static readonly JsonSerializerOptions JsonLine = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    /// <summary>
    /// Runs the benchmark; the report (a table, or JSON) goes to <paramref name="output"/>, progress to <paramref name="log"/>.
    /// Not <see cref="ShiftBenchmarkResult.Succeeded"/> when the migration did not finish.
    /// </summary>
    public static async Task<ShiftBenchmarkResult> RunAsync(ShiftBenchmarkSettings settings, TextWriter output, TextWriter log, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(log);
        LabChecks.EnsureNoCluster();
        var report = await RunCoreAsync(settings, log, cancellationToken).ConfigureAwait(false);

        output.WriteLine(settings.Json ? JsonSerializer.Serialize(report, Json) : Text(report));
        if (report.MigrationState is "timeout" or "not started")
        {
            log.WriteLine($"bench shift: the migration of decision {report.DecisionId} did not finish: {report.MigrationState}");
            return new ShiftBenchmarkResult(report, false);
        }

        return new ShiftBenchmarkResult(report, true);
    }

    private static async Task<ShiftReport> RunCoreAsync(ShiftBenchmarkSettings options, TextWriter log, CancellationToken cancellationToken)
    {
        var total = Stopwatch.StartNew();
        void Log(string line) => log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"bench shift [{total.Elapsed.TotalSeconds,5:F1} s]: {line}"));
        var checkpoint = options.Model ?? ModelCatalog.DefaultCheckpoint;
        IReadOnlyList<string> domains;
        try
        {
            domains = HeldOutTrace.Domains(checkpoint);
        }
        catch (ModelFormatException ex)
        {
            throw new OperationException($"bench shift needs a model with held-out samples of its workload domains (onnx/default has four): {ex.Message}", OperationFailure.InvalidSettings, ex);
        }

        if (domains.Count < 2)
        {
            throw new OperationException($"{checkpoint}: a workload shift needs at least two domains (found {domains.Count})", OperationFailure.InvalidSettings);
        }

        var exported = ModelCatalog.ResolveExported(checkpoint, Log);
        var manifest = ModelManifest.Load(exported);
        var c = manifest.Architecture;
        if (options.PromptBytes + options.MaxTokens + 1 > c.MaxPositions)
        {
            throw new InvalidSettingsException($"--prompt-bytes {options.PromptBytes} + --max-tokens {options.MaxTokens} + BOS exceed the model's context of {c.MaxPositions}");
        }

        var edges = Enumerable.Range(1, domains.Count).Select(i => $"edge-{i}").ToList();
        var budgetBytes = (long)options.MemoryMb << 20;
        var shape = ModelShape.Of(manifest);
        var perEdge = (int)Math.Min(budgetBytes / shape.ExpertBytes, shape.RoutedExperts);
        var share = (double)perEdge / shape.RoutedExperts;
        Log(string.Create(CultureInfo.InvariantCulture,
            $"{edges.Count} edges, edge i serves domain i ({string.Join(", ", edges.Zip(domains, (e, d) => $"{e}={d}"))}); {options.MemoryMb} MiB each = {perEdge} of {shape.RoutedExperts} experts ({share:P0})"));

        Log($"initial placement: dancemoe from the routing of the first {options.HistoryBytes} held-out bytes of each domain...");
        var history = await ShiftWorkload.HistoryCountsAsync(manifest, checkpoint, domains, options.HistoryBytes, cancellationToken).ConfigureAwait(false);
        var placement = ShiftWorkload.InitialPlacement(manifest, history, edges, budgetBytes);
        var prompts = domains.Select(d => ShiftWorkload.Prompts(checkpoint, d, options.HistoryBytes, options.PromptBytes, 64)).ToList();

        await using var environment = await ShiftEnvironment.CreateAsync(Log, cancellationToken).ConfigureAwait(false);
        var finished = false;
        try
        {
            Log($"virtual host {environment.VirtualHost}, database {environment.Database} (migrated), logs in {environment.Directory}");
            var placementFile = Path.Combine(environment.Directory, "placement.json");
            PlacementFile.Save(placementFile, placement);
            var invariant = CultureInfo.InvariantCulture;
            environment.Start("coordinator",
            [
                "coordinator", "--model", exported, "--cron", FarCron, "--algorithm", options.Algorithm,
                "--window-minutes", options.WindowMinutes.ToString(invariant), "--half-life-minutes", options.HalfLifeMinutes.ToString(invariant),
            ]);
            foreach (var edge in edges)
            {
                environment.Start(edge,
                [
                    "edge", "--id", edge, "--model", exported, "--memory-mb", options.MemoryMb.ToString(invariant), "--placement", placementFile,
                    "--provider", options.Provider, "--threads", "1", "--deadline-ms", options.DeadlineMs.ToString(invariant),
                    "--trace-spill-dir", Path.Combine(environment.Directory, "spill"),
                ]);
            }

            Log($"started the coordinator and {edges.Count} edges; waiting until they serve...");
            await environment.WaitReadyAsync(TimeSpan.FromSeconds(300), cancellationToken).ConfigureAwait(false);
            var report = await MeasureAsync(options, environment, edges, domains, prompts, Log, cancellationToken).ConfigureAwait(false);
            finished = true;
            return report with
            {
                Model = exported,
                Domains = domains,
                MemoryMb = options.MemoryMb,
                ExpertsPerEdge = perEdge,
                ExpertShare = Math.Round(share, 3),
                Seconds = Math.Round(total.Elapsed.TotalSeconds, 1),
            };
        }
        finally
        {
            environment.KeepDirectory = !finished || options.KeepLogs;
            Log("stopping the edges and the coordinator, dropping the database and the virtual host...");
        }
    }

    private static async Task<ShiftReport> MeasureAsync(
        ShiftBenchmarkSettings options, ShiftEnvironment environment, List<string> edges, IReadOnlyList<string> domains, List<IReadOnlyList<string>> prompts,
        Action<string> log, CancellationToken cancellationToken)
    {
        var phaseTimeout = TimeSpan.FromSeconds(Math.Max(600, options.RequestTimeout.TotalSeconds * 3));
        var n = options.RequestsPerEdge;
        await using var client = await BusClient.StartAsync(environment.RabbitMqUri, cancellationToken).ConfigureAwait(false);
        using var loadStop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var load = new ShiftLoad(client.Requests, edges, domains, prompts, options.MaxTokens, options.RequestTimeout, log);
        load.Start(loadStop.Token);
        var stoppedCleanly = false;
        try
        {
            // Not measured: the edges' first requests load and initialise what a request needs.
            log($"warm-up: edge i asks domain i for {options.Warmup.TotalSeconds:F0} s (at least one request each), not measured...");
            var warmupUntil = DateTime.UtcNow + options.Warmup;
            await UntilAsync("warm-up", () => DateTime.UtcNow >= warmupUntil && load.MinDone(WarmupPhase) >= 1, phaseTimeout + options.Warmup, environment, cancellationToken)
                .ConfigureAwait(false);

            load.Set(Before, 0);
            log($"phase {Before}: edge i asks domain i, {n} requests per edge...");
            await UntilAsync(Before, () => load.MinDone(Before) >= n, phaseTimeout, environment, cancellationToken).ConfigureAwait(false);

            load.Set(AfterShift, 1);
            log($"shift: edge i now asks domain i+1 ({string.Join(", ", edges.Select((e, i) => $"{e}={domains[(i + 1) % domains.Count]}"))}); phase {AfterShift}...");
            await UntilAsync(AfterShift, () => load.MinDone(AfterShift) >= n, phaseTimeout, environment, cancellationToken).ConfigureAwait(false);

            // The job reads the one-minute buckets of activation_counts that start within its window: run it once every
            // bucket it reads started after the last request of the old workload, with some new requests in them.
            var lastOld = load.Outcomes().Where(o => o.Phase is WarmupPhase or Before).Max(o => o.DoneAt);
            var window = TimeSpan.FromMinutes(options.WindowMinutes);
            log(string.Create(CultureInfo.InvariantCulture,
                $"waiting until the job's {options.WindowMinutes:0.##}-minute window holds only the new workload (last old request ended {lastOld:HH:mm:ss}), load continuing..."));
            await UntilAsync("window", () =>
            {
                var now = DateTimeOffset.UtcNow;
                var firstBucket = CeilMinute(now + TimeSpan.FromSeconds(2) - window);
                var intoMinute = now - FloorMinute(now);
                return firstBucket > lastOld && intoMinute >= TimeSpan.FromSeconds(10) && intoMinute <= TimeSpan.FromSeconds(45)
                    && load.MinDone(AfterShift, sentSince: firstBucket) >= 1;
            }, phaseTimeout, environment, cancellationToken).ConfigureAwait(false);

            load.Set(DuringMigration, 1);
            var decision = await RunPlacementNowAsync(environment, client.Requests, log, cancellationToken).ConfigureAwait(false);
            var migration = MigrationOutcome.None;
            if (decision.Decision == DecisionKind.Migrate && decision.Status == DecisionStatus.PendingSaga)
            {
                migration = await WaitForMigrationAsync(environment, decision.Id, options.MigrationTimeout, log, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                log($"decision {decision.Decision} ({decision.Status}): no migration saga to wait for");
            }

            load.Set(AfterMigration, 1);
            log($"phase {AfterMigration}: {n} requests per edge...");
            await UntilAsync(AfterMigration, () => load.MinDone(AfterMigration) >= n, phaseTimeout, environment, cancellationToken).ConfigureAwait(false);
            log("stopping the client load (requests in flight finish and count)...");
            await load.StopAsync().ConfigureAwait(false);
            stoppedCleanly = true;

            await File.WriteAllLinesAsync(
                Path.Combine(environment.Directory, "requests.jsonl"), load.Outcomes().Select(o => JsonSerializer.Serialize(o, JsonLine)), cancellationToken).ConfigureAwait(false);
            var (completed, failed) = await CountMigrationsAsync(environment, cancellationToken).ConfigureAwait(false);
            var activations = await WindowActivationsAsync(environment, decision, cancellationToken).ConfigureAwait(false);
            return Report(options, edges, load.Outcomes(), decision, migration, completed, failed, activations, lastOld);
        }
        finally
        {
            if (!stoppedCleanly)
            {
                await loadStop.CancelAsync().ConfigureAwait(false);
                await load.StopAsync().ConfigureAwait(false);
            }
        }
    }

    private static async Task<PlacementDecision> RunPlacementNowAsync(ShiftEnvironment environment, RequestChannel requests, Action<string> log, CancellationToken cancellationToken)
    {
        var consumers = await BusClient.ConsumersOfAsync(environment.RabbitMqUri, RunPlacementNowConsumerDefinition.Queue, cancellationToken).ConfigureAwait(false);
        if (consumers is null or 0)
        {
            throw new OperationException($"the coordinator does not consume queue '{RunPlacementNowConsumerDefinition.Queue}'");
        }

        var commandId = await PlacementJobTrigger.SendAsync(requests, "bench shift", cancellationToken).ConfigureAwait(false);
        log($"run-now {commandId} sent to the coordinator, load continuing; waiting for its decision...");
        var decision = await PlacementJobTrigger.WaitForDecisionAsync(environment.PostgresUrl, commandId, TimeSpan.FromMinutes(3), environment.EnsureRunning, cancellationToken)
            .ConfigureAwait(false);
        log($"decision {decision.Id}: {decision.Decision} ({decision.Status}): {decision.Reason}");
        return decision;
    }

    private static async Task<MigrationOutcome> WaitForMigrationAsync(
        ShiftEnvironment environment, long decisionId, TimeSpan timeout, Action<string> log, CancellationToken cancellationToken)
    {
        string? lastState = null;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var progress = Stopwatch.StartNew();
        void Report(MigrationState row)
        {
            // A state seen for the first time, or progress every 5 s: a plan of many moves cycles through the states.
            if (row.CurrentState != lastState && (seen.Add(row.CurrentState) || progress.Elapsed > TimeSpan.FromSeconds(5)))
            {
                log($"migration: {row.CurrentState} ({row.LoadsDone} loads, {row.UnloadsDone} unloads done){(row.Reason is { } r ? ": " + r : "")}");
                progress.Restart();
            }

            lastState = row.CurrentState;
        }

        var wait = await MigrationWaiter.WaitAsync(environment.PostgresUrl, decisionId, timeout, Report, environment.EnsureRunning, cancellationToken).ConfigureAwait(false);
        var last = wait.Last is { } m
            ? new MigrationOutcome(m.CurrentState, m.Reason, m.LoadsDone, m.UnloadsDone, m.FinishedAt is { } f ? Math.Round((f - m.StartedAt).TotalSeconds, 2) : null)
            : null;
        switch (wait.End)
        {
            case MigrationWaitEnd.NotStarted:
                log($"no migration saga started for decision {decisionId} within {MigrationWaiter.StartTimeout.TotalSeconds:F0} s");
                return MigrationOutcome.None with { State = "not started" };
            case MigrationWaitEnd.TimedOut:
                log($"migration still {last?.State} after {timeout.TotalSeconds:F0} s: giving up waiting");
                return (last ?? MigrationOutcome.None) with { State = "timeout", Reason = $"still {last?.State} after {timeout.TotalSeconds:F0} s" };
            default:
                return last!;
        }
    }

    private static async Task<(int Completed, int Failed)> CountMigrationsAsync(ShiftEnvironment environment, CancellationToken cancellationToken)
    {
        await using var connection = await OpenAsync(environment, cancellationToken).ConfigureAwait(false);
        await using var query = new NpgsqlCommand(
            "SELECT count(*) FILTER (WHERE state = 'Completed')::int, count(*) FILTER (WHERE state = 'Failed')::int FROM migrations", connection);
        await using var reader = await query.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        return (reader.GetInt32(0), reader.GetInt32(1));
    }

    /// <summary>Activations per origin edge in the decision's window, and the first bucket the window holds.</summary>
    private static async Task<(Dictionary<string, long> PerEdge, DateTimeOffset? FirstBucket)> WindowActivationsAsync(
        ShiftEnvironment environment, PlacementDecision decision, CancellationToken cancellationToken)
    {
        await using var connection = await OpenAsync(environment, cancellationToken).ConfigureAwait(false);
        await using var query = new NpgsqlCommand(
            "SELECT origin_edge, sum(count)::bigint, min(bucket) FROM activation_counts WHERE bucket >= @from AND bucket < @to GROUP BY origin_edge ORDER BY origin_edge", connection);
        query.Parameters.AddWithValue("from", decision.WindowFrom.ToUniversalTime());
        query.Parameters.AddWithValue("to", decision.WindowTo.ToUniversalTime());
        await using var reader = await query.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        var perEdge = new Dictionary<string, long>(StringComparer.Ordinal);
        DateTimeOffset? first = null;
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            perEdge[reader.GetString(0)] = reader.GetInt64(1);
            var bucket = reader.GetFieldValue<DateTimeOffset>(2);
            first = first is null || bucket < first ? bucket : first;
        }

        return (perEdge, first);
    }

    private static ShiftReport Report(
        ShiftBenchmarkSettings options, List<string> edges, IReadOnlyList<RequestOutcome> outcomes, PlacementDecision decision, MigrationOutcome migration,
        int completed, int failed, (Dictionary<string, long> PerEdge, DateTimeOffset? FirstBucket) window, DateTimeOffset lastOld)
    {
        var phases = new[] { Before, AfterShift, DuringMigration, AfterMigration }.Select(p => PhaseFigures.Of(p, outcomes.Where(o => o.Phase == p).ToList())).ToList();
        PhaseFigures P(string name) => phases.Single(p => p.Phase == name);
        return new ShiftReport
        {
            Edges = edges.Count,
            MaxTokens = options.MaxTokens,
            PromptBytes = options.PromptBytes,
            RequestsPerPhasePerEdge = options.RequestsPerEdge,
            WarmupSeconds = options.Warmup.TotalSeconds,
            RequestsWarmup = outcomes.Count(o => o.Phase == WarmupPhase),
            Algorithm = options.Algorithm,
            InitialPlacement = $"dancemoe for workload A from the routing of the first {options.HistoryBytes} held-out bytes per domain; prompts from the rest",
            WindowMinutes = options.WindowMinutes,
            HalfLifeMinutes = options.HalfLifeMinutes,
            LocalRatioBefore = P(Before).LocalRatio,
            LocalRatioAfterShift = P(AfterShift).LocalRatio,
            LocalRatioDuringMigration = P(DuringMigration).LocalRatio,
            LocalRatioAfterMigration = P(AfterMigration).LocalRatio,
            MsPerTokenP50Before = P(Before).MsPerTokenP50,
            MsPerTokenP50AfterShift = P(AfterShift).MsPerTokenP50,
            MsPerTokenP50DuringMigration = P(DuringMigration).MsPerTokenP50,
            MsPerTokenP50AfterMigration = P(AfterMigration).MsPerTokenP50,
            RequestsBefore = P(Before).Requests,
            RequestsAfterShift = P(AfterShift).Requests,
            RequestsDuringMigration = P(DuringMigration).Requests,
            RequestsAfterMigration = P(AfterMigration).Requests,
            RequestsTotal = outcomes.Count,
            FailedRequests = outcomes.Count(o => !o.Ok),
            FailedRequestErrors = [.. outcomes.Where(o => !o.Ok).Select(o => $"{edges[o.Edge]} {o.Phase} {o.Domain}: {o.Error}")],
            DecisionId = decision.Id,
            Decision = decision.Decision,
            DecisionStatus = decision.Status,
            DecisionReason = decision.Reason,
            DecisionLoads = decision.Loads,
            DecisionUnloads = decision.Unloads,
            MigrationsCompleted = completed,
            MigrationsFailed = failed,
            MigrationState = migration.State,
            MigrationReason = migration.Reason,
            MigrationLoadsDone = migration.LoadsDone,
            MigrationUnloadsDone = migration.UnloadsDone,
            MigrationSeconds = migration.Seconds,
            WindowFrom = decision.WindowFrom,
            WindowTo = decision.WindowTo,
            WindowActivations = window.PerEdge,
            WindowOnlyNewWorkload = window.FirstBucket is null || window.FirstBucket > lastOld,
            Phases = phases,
        };
    }

    private static string Text(ShiftReport r)
    {
        var inv = CultureInfo.InvariantCulture;
        var s = new System.Text.StringBuilder();
        s.AppendLine(inv, $"model {r.Model}: {r.Edges} edges, edge i serves {string.Join(", ", r.Domains)} in turn; {r.MemoryMb} MiB each = {r.ExpertsPerEdge} experts ({r.ExpertShare:P0}); prompts {r.PromptBytes} bytes, {r.MaxTokens} tokens");
        s.AppendLine("phase               requests  failed  local ratio  ms/token p50  ms/token p99  seconds  placement versions");
        foreach (var p in r.Phases)
        {
            s.AppendLine(inv,
                $"{p.Phase,-18} {p.Requests,9} {p.Failed,7} {Format(p.LocalRatio, "F3"),12} {Format(p.MsPerTokenP50, "F1"),13} {Format(p.MsPerTokenP99, "F1"),13} {p.Seconds,8:F1}  {string.Join(",", p.PlacementVersions)}");
        }

        s.AppendLine(inv, $"decision {r.DecisionId}: {r.Decision} ({r.DecisionStatus}): {r.DecisionReason}");
        s.AppendLine(inv, $"job window {r.WindowFrom:HH:mm:ss}..{r.WindowTo:HH:mm:ss} ({r.WindowMinutes:0.##} min, half-life {r.HalfLifeMinutes:0.##} min): activations {string.Join(", ", r.WindowActivations.Select(kv => $"{kv.Key} {kv.Value}"))}; only the new workload: {(r.WindowOnlyNewWorkload ? "yes" : "no")}");
        s.AppendLine(inv, $"migration: {r.MigrationState}{(r.MigrationSeconds is { } m ? string.Create(inv, $" in {m:F1} s") : "")}, {r.MigrationLoadsDone} loads, {r.MigrationUnloadsDone} unloads{(r.MigrationReason is { } why ? " (" + why + ")" : "")}; migrations completed {r.MigrationsCompleted}, failed {r.MigrationsFailed}");
        s.AppendLine(inv, $"failed requests: {r.FailedRequests} of {r.RequestsTotal}");
        foreach (var error in r.FailedRequestErrors)
        {
            s.AppendLine(inv, $"  {error}");
        }

        s.Append(inv, $"run took {r.Seconds:F0} s");
        return s.ToString();
    }

    private static string Format(double? value, string format) => value is { } v ? v.ToString(format, CultureInfo.InvariantCulture) : "-";

    private static async Task UntilAsync(string what, Func<bool> condition, TimeSpan timeout, ShiftEnvironment environment, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!condition())
        {
            environment.EnsureRunning();
            if (DateTime.UtcNow > deadline)
            {
                throw new OperationException($"{what}: not done within {timeout.TotalSeconds:F0} s (logs in {environment.Directory})");
            }

            await Task.Delay(200, cancellationToken).ConfigureAwait(false);
        }
    }

    private static async Task<NpgsqlConnection> OpenAsync(ShiftEnvironment environment, CancellationToken cancellationToken)
    {
        var connection = new NpgsqlConnection(DatabaseOptions.ToNpgsql(environment.PostgresUrl));
        try
        {
            await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
            return connection;
        }
        catch (NpgsqlException ex)
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw new OperationException($"cannot read database {environment.Database}: {ex.Message}", OperationFailure.Unavailable, ex);
        }
    }

    private static DateTimeOffset FloorMinute(DateTimeOffset t) => new(t.UtcTicks - (t.UtcTicks % TimeSpan.TicksPerMinute), TimeSpan.Zero);

    private static DateTimeOffset CeilMinute(DateTimeOffset t)
    {
        var floor = FloorMinute(t);
        return floor == t ? floor : floor.AddMinutes(1);
    }

    private sealed record MigrationOutcome(string State, string? Reason, int? LoadsDone, int? UnloadsDone, double? Seconds)
    {
        public static MigrationOutcome None { get; } = new("none", null, null, null, null);
    }
}

/// <summary>What <c>bench shift</c> runs.</summary>
public sealed record ShiftBenchmarkSettings
{
    public string? Model { get; init; }

    /// <summary>Requests per phase, per edge.</summary>
    public int RequestsPerEdge { get; init; } = 10;
    public TimeSpan Warmup { get; init; } = TimeSpan.FromSeconds(10);
    public int MaxTokens { get; init; } = 32;
    public int PromptBytes { get; init; } = 160;
    public int MemoryMb { get; init; } = 8;
    public int HistoryBytes { get; init; } = 8192;
    public double WindowMinutes { get; init; } = 1;
    public double HalfLifeMinutes { get; init; } = 1;

    /// <summary>The placement job's algorithm (<c>--algorithm</c> of the coordinator).</summary>
    public string Algorithm { get; init; } = PlacementAlgorithms.DanceMoe;
    public int DeadlineMs { get; init; } = 10_000;
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(120);
    public TimeSpan MigrationTimeout { get; init; } = TimeSpan.FromSeconds(300);
    public string Provider { get; init; } = "auto";
    public bool KeepLogs { get; init; }
    public bool Json { get; init; }
}

/// <summary>The report of one <c>bench shift</c>, and whether its migration finished.</summary>
public sealed record ShiftBenchmarkResult(ShiftReport Report, bool Succeeded);

/// <summary>One phase's requests: how many, how many failed, the local ratio of their expert calls and their per-token latency.</summary>
public sealed record PhaseFigures(
    string Phase, int Requests, int Failed, double? LocalRatio, double? MsPerTokenP50, double? MsPerTokenP99, double Seconds, long LocalCalls, long RemoteCalls,
    long GeneratedTokens, IReadOnlyList<int> PlacementVersions)
{
    internal static PhaseFigures Of(string phase, IReadOnlyList<RequestOutcome> outcomes)
    {
        var ok = outcomes.Where(o => o.Ok).ToList();
        long local = ok.Sum(o => o.Local);
        long remote = ok.Sum(o => o.Remote);
        var perToken = ok.Select(o => o.MsPerToken).ToList();
        return new PhaseFigures(
            phase,
            outcomes.Count,
            outcomes.Count - ok.Count,
            local + remote > 0 ? Math.Round((double)local / (local + remote), 4) : null,
            perToken.Count > 0 ? Math.Round(Stats.Median(perToken), 2) : null,
            perToken.Count > 0 ? Math.Round(Stats.Percentile(perToken, 99), 2) : null,
            outcomes.Count > 0 ? Math.Round((outcomes.Max(o => o.DoneAt) - outcomes.Min(o => o.SentAt)).TotalSeconds, 1) : 0,
            local,
            remote,
            ok.Sum(o => (long)o.Tokens),
            [.. ok.Select(o => o.PlacementVersion).Distinct().Order()]);
    }
}

/// <summary>What <c>bench shift --json</c> prints.</summary>
public sealed record ShiftReport
{
    public string Model { get; init; } = "";
    public int Edges { get; init; }
    public IReadOnlyList<string> Domains { get; init; } = [];
    public int MemoryMb { get; init; }
    public int ExpertsPerEdge { get; init; }
    public double ExpertShare { get; init; }
    public int MaxTokens { get; init; }
    public int PromptBytes { get; init; }
    public int RequestsPerPhasePerEdge { get; init; }
    public double WarmupSeconds { get; init; }
    public int RequestsWarmup { get; init; }
    public string InitialPlacement { get; init; } = "";

    /// <summary>The coordinator placement job's algorithm.</summary>
    public string Algorithm { get; init; } = "";
    public double WindowMinutes { get; init; }
    public double HalfLifeMinutes { get; init; }
    public double? LocalRatioBefore { get; init; }
    public double? LocalRatioAfterShift { get; init; }
    public double? LocalRatioDuringMigration { get; init; }
    public double? LocalRatioAfterMigration { get; init; }
    public double? MsPerTokenP50Before { get; init; }
    public double? MsPerTokenP50AfterShift { get; init; }
    public double? MsPerTokenP50DuringMigration { get; init; }
    public double? MsPerTokenP50AfterMigration { get; init; }
    public int RequestsBefore { get; init; }
    public int RequestsAfterShift { get; init; }
    public int RequestsDuringMigration { get; init; }
    public int RequestsAfterMigration { get; init; }
    public int RequestsTotal { get; init; }
    public int FailedRequests { get; init; }
    public IReadOnlyList<string> FailedRequestErrors { get; init; } = [];
    public long DecisionId { get; init; }
    public string Decision { get; init; } = "";
    public string DecisionStatus { get; init; } = "";
    public string DecisionReason { get; init; } = "";
    public int? DecisionLoads { get; init; }
    public int? DecisionUnloads { get; init; }
    public int MigrationsCompleted { get; init; }
    public int MigrationsFailed { get; init; }
    public string MigrationState { get; init; } = "";
    public string? MigrationReason { get; init; }
    public int? MigrationLoadsDone { get; init; }
    public int? MigrationUnloadsDone { get; init; }
    public double? MigrationSeconds { get; init; }
    public DateTimeOffset WindowFrom { get; init; }
    public DateTimeOffset WindowTo { get; init; }
    public IReadOnlyDictionary<string, long> WindowActivations { get; init; } = new Dictionary<string, long>();
    public bool WindowOnlyNewWorkload { get; init; }
    public double Seconds { get; init; }
    public IReadOnlyList<PhaseFigures> Phases { get; init; } = [];
}
