using DanceMoE.Placement;
using System.Diagnostics;
using System.Globalization;
using DanceMoE.Contracts;
using DanceMoE.Coordinator;
using DanceMoE.Coordinator.Saga;
using DanceMoE.Data;
using DanceMoE.Hosting;
using DanceMoE.Edge;
using DanceMoE.Model;
using DanceMoE.Model.Locality;
using DanceMoE.Operations;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Npgsql;

namespace DanceMoE.Lab.Demo;

/// <summary>
/// <c>dancemoe demo</c>: the main job, the closed loop in about half a minute. Services up, migrations applied, the coordinator
/// started in this process, a local cluster of one edge per workload domain of the default model with a memory budget
/// that holds only part of the experts (uniform placement to start), round 1 (each edge asks a prompt of its own
/// domain), the placement job run now on the activations round 1 recorded, its migration saga followed to its end,
/// round 2 (the same prompts: the same tokens, more of the expert calls local).
/// </summary>
public static class ClosedLoopDemo
{
    private static readonly string[] FallbackPrompts =
    [
        "The court held that the contract",
        "NAME\n       ls - list directory contents",
        "def parse_args(argv):\n    ",
    ];

    /// <summary>Far enough away that only the demo's run-now fires the placement job.</summary>
    private const string FarCron = "0 0 0 1 1 ? 2099";

    /// <summary>
    /// The job reads the one-minute buckets of activation_counts that start in its window: three minutes always hold the
    /// bucket round 1 began in (the job runs well within a minute or two of it), and a one-minute half-life makes what
    /// earlier runs recorded weigh little.
    /// </summary>
    private const double WindowMinutes = 3;

    private const double HalfLifeMinutes = 1;

    /// <summary>Share of the routed experts each edge's memory budget holds (at least its share of the uniform start).</summary>
    private const double BudgetShare = 0.375;

    private static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(120);
    private static readonly TimeSpan DecisionTimeout = TimeSpan.FromMinutes(3);
    private static readonly TimeSpan MigrationTimeout = TimeSpan.FromMinutes(5);

    /// <summary>
    /// The broker user the demo asks the coordinator's job to run with: ops, as <c>placement run-now</c> does. The client's
    /// user may not send to the coordinator's queue, and MassTransit tried the refused send again until the caller gave up.
    /// </summary>
    public static string RunNowRabbitMqUri => LocalEnvironment.RabbitMqUriFor(BusRole.Ops);

    /// <summary>Each edge's default memory budget: room for <see cref="BudgetShare"/> of the routed experts, at least the uniform start's share.</summary>
    public static int DefaultMemoryMb(int routedExperts, int edges, long expertBytes) =>
        (int)Math.Ceiling(Math.Max(Math.Ceiling(routedExperts * BudgetShare), (routedExperts + edges - 1) / edges) * expertBytes / 1048576.0);

    /// <summary>Runs the demo, its story to <paramref name="output"/>; not <see cref="DemoResult.Succeeded"/> when the answers changed or the migration failed.</summary>
    public static async Task<DemoResult> RunAsync(DemoSettings settings, TextWriter output, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(output);
        var clock = Stopwatch.StartNew();
        try
        {
            return await RunCoreAsync(settings, output, clock, cancellationToken).ConfigureAwait(false);
        }
        catch (NpgsqlException ex)
        {
            throw new OperationException($"PostgreSQL at {LocalEnvironment.Redact(LocalEnvironment.PostgresUrl)}: {ex.Message}", OperationFailure.Unavailable, ex);
        }
        catch (RabbitMqConnectionException ex)
        {
            throw new OperationException($"RabbitMQ at {LocalEnvironment.Redact(LocalEnvironment.RabbitMqUri)}: {ex.Message}", OperationFailure.Unavailable, ex);
        }
        catch (ModelFormatException ex)
        {
            throw new OperationException($"cannot read the model: {ex.Message}", OperationFailure.Failed, ex);
        }
    }

    private static async Task<DemoResult> RunCoreAsync(DemoSettings settings, TextWriter output, Stopwatch clock, CancellationToken cancellationToken)
    {
        var (model, maxTokens, keep) = (settings.Model, settings.MaxTokens, settings.Keep);
        if (settings.StartServices)
        {
            await StartServicesAsync(cancellationToken).ConfigureAwait(false);
        }

        var migrated = await LocalDatabase.MigrateAsync(LocalEnvironment.PostgresUrl, TimeSpan.FromSeconds(30), cancellationToken).ConfigureAwait(false);
        output.WriteLine($"[demo] database migrated ({migrated.AllApplied.Count} migrations, {migrated.Applied.Count} new)");

        var running = LocalCluster.RunningEdges();
        if (running.Count > 0)
        {
            throw new OperationException(
                $"a cluster is already running ({string.Join(", ", running.Select(r => r.Id))}; a demo --keep leaves one): ./dancemoe cluster down first, the demo starts its own");
        }

        if (await BusClient.ConsumersOfAsync(LocalEnvironment.RabbitMqUri, RunPlacementNowConsumerDefinition.Queue, cancellationToken).ConfigureAwait(false) is > 0)
        {
            throw new OperationException(
                $"a coordinator already serves queue '{RunPlacementNowConsumerDefinition.Queue}' on this broker: stop it first (the demo runs its own; two would share the heartbeats)",
                OperationFailure.Unavailable);
        }

        var requests = DemoRequests(model);
        var exported = ModelCatalog.ResolveExported(model, line => output.WriteLine($"[demo] {line}"));
        var manifest = ModelManifest.Load(exported);
        var shape = ModelShape.Of(manifest);
        var (routed, expertBytes) = (shape.RoutedExperts, shape.ExpertBytes);
        var uniformPerEdge = (routed + requests.Count - 1) / requests.Count;
        var memoryMb = settings.MemoryMb ?? DefaultMemoryMb(routed, requests.Count, expertBytes);
        var fits = (int)Math.Min(((long)memoryMb << 20) / expertBytes, routed);
        if (fits < uniformPerEdge)
        {
            throw new InvalidSettingsException($"--memory-mb {memoryMb} holds {fits} experts; the uniform start gives each edge {uniformPerEdge}");
        }

        var logDirectory = Path.Combine(LocalEnvironment.StateDirectory, "demo");
        Directory.CreateDirectory(logDirectory);
        var coordinatorLog = Path.Combine(logDirectory, "coordinator.log");
        using var log = new FileLoggerProvider(coordinatorLog);
        using var coordinator = await StartCoordinatorAsync(shape, settings.Algorithm, log, cancellationToken).ConfigureAwait(false);
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"[demo] coordinator started in this process: placement job 'dancemoe' (only the demo fires it), window {WindowMinutes:0.#} min, half-life {HalfLifeMinutes:0.#} min; log {coordinatorLog}"));
        var edgesStarted = false;
        var succeeded = true;
        string finalLine;
        try
        {
            var services = coordinator.Services;
            var dbFactory = services.GetRequiredService<IDbContextFactory<DanceMoEDbContext>>();
            await WaitForEarlierMigrationsAsync(dbFactory, output, cancellationToken).ConfigureAwait(false);

            // The edges start from the uniform bootstrap file; registering it as the active version keeps the coordinator
            // from catching them up with whatever an earlier run left active, so every run starts from the same place.
            var ids = requests.Select(r => r.Edge).ToList();
            var uniform = PlacementFile.Uniform(1, shape.Layers, shape.Experts, ids);
            var registry = services.GetRequiredService<PlacementRegistry>();
            var bootstrap = await registry.AddAsync(
                PlacementAlgorithms.Uniform, (1 - (1.0 / ids.Count)) * shape.Layers * shape.TopK, $"demo:{Guid.NewGuid():N}", uniform.Assignments, cancellationToken)
                .ConfigureAwait(false);
            await registry.ActivateAsync(bootstrap, cancellationToken).ConfigureAwait(false);

            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"[demo] starting {ids.Count} edges, {memoryMb} MiB each: room for {fits} of the {routed} routed experts ({(double)fits / routed:P0}); placement v{bootstrap} uniform, every expert once"));
            // Only once they are up are the edges this demo's to stop: an up refused beside another cluster leaves that one
            // running, and one cancelled or failed has stopped its own.
            var edges = await LocalCluster.UpAsync(new ClusterSpec { Edges = ids.Count, Model = model, MemoryMb = [memoryMb] }, line => output.WriteLine($"[demo] {line}"), cancellationToken)
                .ConfigureAwait(false);
            edgesStarted = true;
            output.WriteLine($"[demo] {string.Join(", ", edges.Select(e => $"{e.Id} pid {e.Pid} ({e.Experts} experts)"))}");

            await using var client = await BusClient.StartAsync(LocalEnvironment.RabbitMqUri, cancellationToken).ConfigureAwait(false);
            output.WriteLine();
            output.WriteLine("[demo] round 1: each edge answers a prompt of its own domain");
            var round1 = await RoundAsync(client.Requests, requests, maxTokens, null, output, cancellationToken).ConfigureAwait(false);
            var share1 = LocalShare(round1);
            output.WriteLine($"[demo] round 1: {Percent(share1)} of the expert calls local ({PerEdge(round1)})");

            output.WriteLine();
            var activations = await WaitForTracesAsync(round1, shape.Layers * shape.TopK, cancellationToken).ConfigureAwait(false);
            await WaitForMembersAsync(services.GetRequiredService<ClusterMembership>(), ids, bootstrap, cancellationToken).ConfigureAwait(false);
            output.WriteLine($"[demo] the edges recorded round 1's {activations} expert activations; running the placement job now...");
            var commandId = await PlacementJobTrigger.SendAsync(RunNowRabbitMqUri, "demo", cancellationToken).ConfigureAwait(false);
            var decision = await PlacementJobTrigger.WaitForDecisionAsync(LocalEnvironment.PostgresUrl, commandId, DecisionTimeout, null, cancellationToken).ConfigureAwait(false);
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"[demo] decision {decision.Id}: {decision.Decision} ({decision.Status}), v{decision.CurrentVersion} -> v{decision.CandidateVersion?.ToString(CultureInfo.InvariantCulture) ?? "-"}: {decision.Reason}"));
            string? migrationOutcome = null;
            if (decision.Status == DecisionStatus.PendingSaga)
            {
                var migration = await WaitForMigrationAsync(decision, output, cancellationToken).ConfigureAwait(false);
                if (migration?.CurrentState != MigrationStateName.Completed)
                {
                    migrationOutcome = migration is null ? "never started" : $"{migration.CurrentState}{(migration.Reason is { } why ? ": " + why : "")}";
                }
            }
            else if (decision.Decision != DecisionKind.Migrate)
            {
                migrationOutcome = $"the job decided {decision.Decision}";
            }

            output.WriteLine();
            output.WriteLine("[demo] round 2: the same prompts");
            var round2 = await RoundAsync(client.Requests, requests, maxTokens, round1, output, cancellationToken).ConfigureAwait(false);
            var share2 = LocalShare(round2);
            var same = round1.Zip(round2).All(p => p.First.Answer.TokenIds.SequenceEqual(p.Second.Answer.TokenIds));
            output.WriteLine($"[demo] round 2: {Percent(share2)} of the expert calls local ({PerEdge(round2)}); answers {(same ? "identical to round 1 (token ids)" : "DIFFERENT from round 1")}");
            output.WriteLine($"[demo] over the bus per generated token: {Traffic(round1)} -> {Traffic(round2)} (SQL: communication_by_placement)");
            output.WriteLine();

            var summary = $"local share of expert calls {Percent(share1)} -> {Percent(share2)}";
            if (!same)
            {
                succeeded = false;
                summary += "; ANSWERS CHANGED (greedy decoding: a placement must never change an answer)";
            }
            else if (migrationOutcome is not null)
            {
                summary += $"; no migration: {migrationOutcome}";
                succeeded = decision.Status != DecisionStatus.PendingSaga;
            }

            finalLine = summary;
        }
        finally
        {
            if (edgesStarted && !keep)
            {
                await LocalCluster.DownAsync(CancellationToken.None).ConfigureAwait(false);
            }

            await coordinator.StopAsync(CancellationToken.None).ConfigureAwait(false);
            output.WriteLine(keep && edgesStarted
                ? "[demo] --keep: the edges keep running and serving their placement (./dancemoe cluster down stops them); the coordinator stopped with the demo (no placement job, no migration until ./dancemoe coordinator runs)"
                : "[demo] edges and coordinator stopped (--keep leaves the edges running)");
        }

        output.WriteLine($"[demo] history: psql \"{LocalEnvironment.PostgresUrl}\" -c 'select * from placement_decisions order by id desc limit 1'");
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[demo] {finalLine}; done in {clock.Elapsed.TotalSeconds:F1} s"));
        return new DemoResult(succeeded, finalLine);
    }

    private sealed record Answered(string Edge, string Domain, string Prompt, TextGenerated Answer);

    /// <summary>One request per edge, one after the other; round 2 prints only its figures and whether the tokens are round 1's.</summary>
    private static async Task<List<Answered>> RoundAsync(
        RequestChannel channel, List<(string Edge, string Domain, string Prompt)> requests, int maxTokens, List<Answered>? before, TextWriter output, CancellationToken cancellationToken)
    {
        var answers = new List<Answered>();
        foreach (var (edge, domain, prompt) in requests)
        {
            var answer = await EdgeRequests.SendAsync(channel, edge, new GenerateText
            {
                RequestId = NewId.NextGuid(),
                Prompt = prompt,
                MaxNewTokens = maxTokens,
                WorkloadTag = "demo",
            }, RequestTimeout, cancellationToken).ConfigureAwait(false);
            var s = answer.Stats;
            var figures = string.Create(CultureInfo.InvariantCulture,
                $"{answer.TokenIds.Count} tokens in {s.LatencyMs:F0} ms; expert calls {s.LocalExpertCalls} local, {s.RemoteExpertCalls} remote ({Percent(Share(s))}), {s.RemoteBytes / 1024.0:F0} KiB over the bus");
            if (before is null)
            {
                output.WriteLine($"[{edge}] {domain}: {Printable(prompt)}");
                output.WriteLine($"[{edge}]   -> {Printable(answer.Text)}");
                output.WriteLine($"[{edge}]   {figures}");
            }
            else
            {
                var same = before.Single(b => b.Edge == edge).Answer.TokenIds.SequenceEqual(answer.TokenIds);
                output.WriteLine($"[{edge}] {figures}; {(same ? "same tokens" : "DIFFERENT TOKENS: " + Printable(answer.Text))}");
            }

            answers.Add(new Answered(edge, domain, prompt, answer));
        }

        return answers;
    }

    private static double Share(GenerationStats s) => (double)s.LocalExpertCalls / Math.Max(1, s.LocalExpertCalls + s.RemoteExpertCalls);

    private static double LocalShare(List<Answered> round)
    {
        var local = round.Sum(a => a.Answer.Stats.LocalExpertCalls);
        return (double)local / Math.Max(1, local + round.Sum(a => a.Answer.Stats.RemoteExpertCalls));
    }

    private static string Traffic(List<Answered> round)
    {
        var tokens = Math.Max(1, round.Sum(a => a.Answer.TokenIds.Count));
        return string.Create(CultureInfo.InvariantCulture,
            $"{round.Sum(a => a.Answer.Stats.RemoteBatchShare) / tokens:F2} expert batches, {round.Sum(a => a.Answer.Stats.RemoteBytes) / 1024.0 / tokens:F1} KiB");
    }

    private static string PerEdge(List<Answered> round) => string.Join(", ", round.Select(a => $"{a.Edge} {Percent(Share(a.Answer.Stats))}"));

    private static string Percent(double share) => share.ToString("P0", CultureInfo.InvariantCulture);

    private static string Printable(string text) =>
        new(text.Select(c => char.IsControl(c) && c != ' ' ? (c == '\n' ? '↵' : '.') : c).ToArray());

    /// <summary>The coordinator, in this process, on the model's shape: its placement job fires only when the demo asks.</summary>
    private static async Task<IHost> StartCoordinatorAsync(ModelShape shape, string algorithm, ILoggerProvider log, CancellationToken cancellationToken)
    {
        var inv = CultureInfo.InvariantCulture;
        var settings = new Dictionary<string, string?>(shape.PlacementJobSettings(), StringComparer.Ordinal)
        {
            ["PlacementJob:Cron"] = FarCron,
            ["PlacementJob:Algorithm"] = algorithm,
            ["PlacementJob:WindowMinutes"] = WindowMinutes.ToString(inv),
            ["PlacementJob:HalfLifeMinutes"] = HalfLifeMinutes.ToString(inv),

            // A load takes well under a second here; a shorter deadline than the default 60 s ends sooner a migration an
            // interrupted earlier run left behind (the demo waits for it before it starts).
            ["Migration:LoadTimeoutSeconds"] = "20",
        };
        var configuration = new ConfigurationBuilder().AddConfiguration(LocalEnvironment.Configuration.WithLocalServices(BusRole.Coordinator))
            .AddInMemoryCollection(settings).Build();
        var host = CoordinatorHost.Build(configuration, logging =>
        {
            logging.ClearProviders();
            logging.AddProvider(log);
        });
        try
        {
            await host.StartAsync(cancellationToken).ConfigureAwait(false);
            return host;
        }
        catch (Exception ex) when (ex is RabbitMqConnectionException or TimeoutException or OptionsValidationException)
        {
            host.Dispose();
            throw new OperationException($"the coordinator cannot start on {LocalEnvironment.Redact(LocalEnvironment.RabbitMqUri)}: {ex.Message}", OperationFailure.Unavailable, ex);
        }
    }

    /// <summary>A migration an interrupted earlier run left running blocks the job: the coordinator's timeout job ends it.</summary>
    private static async Task WaitForEarlierMigrationsAsync(IDbContextFactory<DanceMoEDbContext> dbFactory, TextWriter output, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var deadline = DateTime.UtcNow.AddMinutes(3);
        var told = false;
        while (true)
        {
            await using var db = await dbFactory.CreateDbContextAsync(cancellationToken).ConfigureAwait(false);
            var left = await db.Migrations.AsNoTracking().Where(m => MigrationStateName.Running.Contains(m.CurrentState))
                .Select(m => new { m.CorrelationId, m.CurrentState }).FirstOrDefaultAsync(cancellationToken).ConfigureAwait(false);
            if (left is null)
            {
                if (told)
                {
                    output.WriteLine($"[demo] it ended after {clock.Elapsed.TotalSeconds:F0} s");
                }

                return;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new OperationException($"migration {left.CorrelationId} of an earlier run is still {left.CurrentState} after 3 minutes (./dancemoe status)");
            }

            if (!told)
            {
                output.WriteLine($"[demo] migration {left.CorrelationId} of an earlier run is still {left.CurrentState}: waiting until the coordinator's timeouts end it...");
                told = true;
            }

            await Task.Delay(500, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Waits until round 1's routing decisions are in PostgreSQL (routing_events, and with them activation_counts): the job reads them.</summary>
    private static async Task<long> WaitForTracesAsync(List<Answered> round, int activationsPerPosition, CancellationToken cancellationToken)
    {
        // Every position but the last generated token's goes through every layer's router: top-k activations each.
        var expected = round.Sum(a => (long)(a.Answer.Stats.PromptTokens + a.Answer.TokenIds.Count - 1) * activationsPerPosition);
        var ids = round.Select(a => a.Answer.RequestId).ToArray();
        var deadline = DateTime.UtcNow.AddSeconds(30);
        long recorded;
        await using var connection = new NpgsqlConnection(DatabaseOptions.ToNpgsql(LocalEnvironment.PostgresUrl));
        await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        while (true)
        {
            await using (var query = new NpgsqlCommand("SELECT coalesce(sum(cardinality(experts)), 0)::bigint FROM routing_events WHERE request_id = ANY(@ids)", connection))
            {
                query.Parameters.AddWithValue("ids", ids);
                recorded = (long)(await query.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) ?? 0L);
            }

            if (recorded >= expected)
            {
                return recorded;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new OperationException($"the edges recorded {recorded} of round 1's {expected} expert activations within 30 s: are their trace writers up? (logs in {LocalCluster.Directory})");
            }

            await Task.Delay(250, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Waits until the coordinator hears every edge route by the demo's start placement (it plans from what they hold).</summary>
    private static async Task WaitForMembersAsync(ClusterMembership membership, List<string> ids, int version, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (true)
        {
            var alive = membership.Alive(DateTimeOffset.UtcNow);
            var missing = ids.Where(id => !alive.Any(e => e.EdgeId == id && e.PlacementVersion == version)).ToList();
            if (missing.Count == 0)
            {
                return;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new OperationException($"the coordinator has not heard {string.Join(", ", missing)} route by placement v{version} within 30 s");
            }

            await Task.Delay(200, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Follows the saga the decision started to Completed or Failed, with its progress every few seconds; null if it never started.</summary>
    private static async Task<MigrationState?> WaitForMigrationAsync(PlacementDecision decision, TextWriter output, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        TimeSpan? lastPrint = null;
        void Report(MigrationState row)
        {
            var moves = MigrationProgress.Moves(row.Moves);
            var loads = moves.Count(x => x.Action == MigrationProgress.Load);
            var progress = string.Create(CultureInfo.InvariantCulture, $"loads {row.LoadsDone}/{loads}, unloads {row.UnloadsDone}/{moves.Count - loads}");
            if (MigrationStateName.IsFinal(row.CurrentState))
            {
                var took = ((row.FinishedAt ?? DateTimeOffset.UtcNow) - row.StartedAt).TotalSeconds;
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"[demo] migration {row.CurrentState} in {took:F1} s: {progress}; placement v{row.ActivatedVersion?.ToString(CultureInfo.InvariantCulture) ?? "-"} active{(row.Reason is { } why ? "; " + why : "")}"));
            }
            else if (lastPrint is null || clock.Elapsed - lastPrint >= TimeSpan.FromSeconds(4))
            {
                output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[demo] migration {row.CurrentState}: {progress} ({clock.Elapsed.TotalSeconds:F0} s)"));
                lastPrint = clock.Elapsed;
            }
        }

        var wait = await MigrationWaiter.WaitAsync(LocalEnvironment.PostgresUrl, decision.Id, MigrationTimeout, Report, null, cancellationToken).ConfigureAwait(false);
        switch (wait.End)
        {
            case MigrationWaitEnd.NotStarted:
                output.WriteLine($"[demo] no migration saga started within {MigrationWaiter.StartTimeout.TotalSeconds:F0} s (see {Path.Combine(LocalEnvironment.StateDirectory, "demo", "coordinator.log")})");
                break;
            case MigrationWaitEnd.TimedOut:
                output.WriteLine($"[demo] migration still {wait.Last?.CurrentState} after {MigrationTimeout.TotalSeconds:F0} s: not waiting any longer");
                break;
            default:
                break;
        }

        return wait.Last;
    }

    private static async Task StartServicesAsync(CancellationToken cancellationToken)
    {
        var script = Path.Combine(LocalEnvironment.RepositoryRoot, "scripts", "services.sh");
        using var process = Process.Start(new ProcessStartInfo(script, "up") { UseShellExecute = false })
            ?? throw new OperationException($"cannot run {script}");
        await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        if (process.ExitCode != 0)
        {
            throw new OperationException($"services up failed (exit {process.ExitCode}); see the messages above", OperationFailure.Unavailable);
        }
    }

    /// <summary>
    /// One request per domain of the model's held-out samples (the trained default model has four), each
    /// sent to its own edge: edge i serves domain i. A model without samples gets three fixed prompts.
    /// </summary>
    private static List<(string Edge, string Domain, string Prompt)> DemoRequests(string? model)
    {
        var checkpoint = model ?? ModelCatalog.DefaultCheckpoint;
        var domains = Directory.Exists(Path.Combine(checkpoint, HeldOutTrace.Folder)) ? HeldOutTrace.Domains(checkpoint) : [];
        if (domains.Count == 0)
        {
            return [.. FallbackPrompts.Select((p, i) => ($"edge-{i + 1}", "sample", p))];
        }

        return [.. domains.Select((domain, i) =>
        {
            var text = System.Text.Encoding.UTF8.GetString(HeldOutTrace.Sample(checkpoint, domain, 400));
            var lines = text.Split('\n').Select(l => l.Trim()).Where(l => l.Length >= 12).ToList();
            var prompt = System.Text.RegularExpressions.Regex.Replace(string.Join(" ", lines), @"\s+", " ");
            return ($"edge-{i + 1}", domain, prompt[..Math.Min(prompt.Length, 72)]);
        })];
    }
}

/// <summary>What <c>dancemoe demo</c> runs.</summary>
public sealed record DemoSettings
{
    /// <summary>Run <c>scripts/services.sh up</c> first.</summary>
    public bool StartServices { get; init; } = true;

    /// <summary>A checkpoint or exported model; the default model when null.</summary>
    public string? Model { get; init; }

    public int MaxTokens { get; init; } = 48;

    /// <summary>Each edge's memory budget; by default room for a share of the routed experts.</summary>
    public int? MemoryMb { get; init; }

    /// <summary>Leave the edges running after the demo.</summary>
    public bool Keep { get; init; }

    /// <summary>The placement job's algorithm (<c>PlacementJob:Algorithm</c>).</summary>
    public string Algorithm { get; init; } = PlacementAlgorithms.DanceMoe;
}

/// <summary>How the demo ended: its last line, and whether the loop did what it shows.</summary>
public sealed record DemoResult(bool Succeeded, string Summary);
