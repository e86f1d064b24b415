using System.Diagnostics;
using System.Globalization;
using DanceMoE.Contracts;
using DanceMoE.Coordinator;
using DanceMoE.Coordinator.Saga;
using DanceMoE.Data;
using DanceMoE.Edge;
using DanceMoE.Model;
using DanceMoE.Model.Locality;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Npgsql;

namespace DanceMoE.Cli.Commands;

/// <summary>
/// <c>dancemoe demo</c>: the main job, the closed loop in about half a minute. Services up, migrations applied, the coordinator
/// started in this process, a local cluster of one edge per workload domain of the default model with a memory budget
/// that holds only part of the experts (uniform placement to start), round 1 (each edge asks a prompt of its own
/// domain), the placement job run now on the activations round 1 recorded, its migration saga followed to its end,
/// round 2 (the same prompts: the same tokens, more of the expert calls local).
/// </summary>
public sealed class DemoCommand : ICliCommand
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

    public string Verb => "demo";

    public string Usage => "demo [--no-services] [--model DIR] [--max-tokens 48] [--memory-mb N] [--keep]   the closed loop: a cluster, the coordinator, a migration, the same answers with more local expert calls";

    public async Task<int> RunAsync(Arguments args, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        var noServices = args.Flag("no-services");
        var model = args.Option("model");
        var maxTokens = args.Int("max-tokens", 48, 1, 512);
        var memoryOption = args.Option("memory-mb") is null ? (int?)null : args.Int("memory-mb", 0, 1, 1_048_576);
        var keep = args.Flag("keep");
        args.EnsureAllUsed(0);
        var clock = Stopwatch.StartNew();

        try
        {
            return await RunCoreAsync(noServices, model, maxTokens, memoryOption, keep, clock, cancellationToken).ConfigureAwait(false);
        }
        catch (NpgsqlException ex)
        {
            throw new CliException($"PostgreSQL at {DbCommand.Redact(CliEnvironment.PostgresUrl)}: {ex.Message}", ExitCodes.Unavailable, ex);
        }
        catch (RabbitMqConnectionException ex)
        {
            throw new CliException($"RabbitMQ at {DbCommand.Redact(CliEnvironment.RabbitMqUri)}: {ex.Message}", ExitCodes.Unavailable, ex);
        }
        catch (ModelFormatException ex)
        {
            throw new CliException($"cannot read the model: {ex.Message}", ExitCodes.Failed, ex);
        }
    }

    private static async Task<int> RunCoreAsync(bool noServices, string? model, int maxTokens, int? memoryOption, bool keep, Stopwatch clock, CancellationToken cancellationToken)
    {
        if (!noServices)
        {
            await StartServicesAsync(cancellationToken).ConfigureAwait(false);
        }

        var migrated = await DbCommand.MigrateAsync(CliEnvironment.PostgresUrl, TimeSpan.FromSeconds(30), cancellationToken).ConfigureAwait(false);
        Console.WriteLine($"[demo] database migrated ({migrated.AllApplied.Count} migrations, {migrated.Applied.Count} new)");

        var running = ClusterCommand.RunningEdges();
        if (running.Count > 0)
        {
            throw new CliException(
                $"a cluster is already running ({string.Join(", ", running.Select(r => r.Id))}; a demo --keep leaves one): ./dancemoe cluster down first, the demo starts its own");
        }

        if (await BusClient.ConsumersOfAsync(CliEnvironment.RabbitMqUri, RunPlacementNowConsumerDefinition.Queue, cancellationToken).ConfigureAwait(false) is > 0)
        {
            throw new CliException(
                $"a coordinator already serves queue '{RunPlacementNowConsumerDefinition.Queue}' on this broker: stop it first (the demo runs its own; two would share the heartbeats)",
                ExitCodes.Unavailable);
        }

        var requests = DemoRequests(model);
        var exported = ModelCatalog.ResolveExported(model, line => Console.WriteLine($"[demo] {line}"));
        var manifest = ModelManifest.Load(exported);
        var architecture = manifest.Architecture;
        var routed = architecture.NumLayers * architecture.NumExperts;
        var expertBytes = manifest.Experts.Max(e => e.WeightBytes);
        var uniformPerEdge = (routed + requests.Count - 1) / requests.Count;
        var memoryMb = memoryOption
            ?? (int)Math.Ceiling(Math.Max(Math.Ceiling(routed * BudgetShare), uniformPerEdge) * expertBytes / 1048576.0);
        var fits = (int)Math.Min(((long)memoryMb << 20) / expertBytes, routed);
        if (fits < uniformPerEdge)
        {
            throw new UsageException($"--memory-mb {memoryMb} holds {fits} experts; the uniform start gives each edge {uniformPerEdge}");
        }

        var logDirectory = Path.Combine(ModelCatalog.StateDirectory, "demo");
        Directory.CreateDirectory(logDirectory);
        var coordinatorLog = Path.Combine(logDirectory, "coordinator.log");
        using var log = new FileLoggerProvider(coordinatorLog);
        using var coordinator = await StartCoordinatorAsync(manifest, log, cancellationToken).ConfigureAwait(false);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"[demo] coordinator started in this process: placement job 'dancemoe' (only the demo fires it), window {WindowMinutes:0.#} min, half-life {HalfLifeMinutes:0.#} min; log {coordinatorLog}"));
        var edgesStarted = false;
        var outcome = ExitCodes.Ok;
        string finalLine;
        try
        {
            var services = coordinator.Services;
            var dbFactory = services.GetRequiredService<IDbContextFactory<DanceMoEDbContext>>();
            await WaitForEarlierMigrationsAsync(dbFactory, cancellationToken).ConfigureAwait(false);

            // The edges start from the uniform bootstrap file; registering it as the active version keeps the coordinator
            // from catching them up with whatever an earlier run left active, so every run starts from the same place.
            var ids = requests.Select(r => r.Edge).ToList();
            var uniform = PlacementFile.Uniform(1, architecture.NumLayers, architecture.NumExperts, ids);
            var registry = services.GetRequiredService<PlacementRegistry>();
            var bootstrap = await registry.AddAsync(
                "uniform", (1 - (1.0 / ids.Count)) * architecture.NumLayers * architecture.TopK, $"demo:{Guid.NewGuid():N}", uniform.Assignments, cancellationToken)
                .ConfigureAwait(false);
            await registry.ActivateAsync(bootstrap, cancellationToken).ConfigureAwait(false);

            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"[demo] starting {ids.Count} edges, {memoryMb} MiB each: room for {fits} of the {routed} routed experts ({(double)fits / routed:P0}); placement v{bootstrap} uniform, every expert once"));
            edgesStarted = true;
            var edges = await ClusterCommand.UpAsync(new ClusterSpec { Edges = ids.Count, Model = model, MemoryMb = [memoryMb] }, line => Console.WriteLine($"[demo] {line}"), cancellationToken)
                .ConfigureAwait(false);
            Console.WriteLine($"[demo] {string.Join(", ", edges.Select(e => $"{e.Id} pid {e.Pid} ({e.Experts} experts)"))}");

            await using var client = await BusClient.StartAsync(CliEnvironment.RabbitMqUri, cancellationToken).ConfigureAwait(false);
            Console.WriteLine();
            Console.WriteLine("[demo] round 1: each edge answers a prompt of its own domain");
            var round1 = await RoundAsync(client.Bus, requests, maxTokens, null, cancellationToken).ConfigureAwait(false);
            var share1 = LocalShare(round1);
            Console.WriteLine($"[demo] round 1: {Percent(share1)} of the expert calls local ({PerEdge(round1)})");

            Console.WriteLine();
            var activations = await WaitForTracesAsync(round1, architecture.NumLayers * architecture.TopK, cancellationToken).ConfigureAwait(false);
            await WaitForMembersAsync(services.GetRequiredService<ClusterMembership>(), ids, bootstrap, cancellationToken).ConfigureAwait(false);
            Console.WriteLine($"[demo] the edges recorded round 1's {activations} expert activations; running the placement job now...");
            var commandId = await PlacementRunNow.SendAsync(services.GetRequiredService<IBus>(), "demo", cancellationToken).ConfigureAwait(false);
            var decision = await PlacementRunNow.WaitForDecisionAsync(CliEnvironment.PostgresUrl, commandId, DecisionTimeout, null, cancellationToken).ConfigureAwait(false);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"[demo] decision {decision.Id}: {decision.Decision} ({decision.Status}), v{decision.CurrentVersion} -> v{decision.CandidateVersion?.ToString(CultureInfo.InvariantCulture) ?? "-"}: {decision.Reason}"));
            string? migrationOutcome = null;
            if (decision.Status == DecisionStatus.PendingSaga)
            {
                var migration = await WaitForMigrationAsync(dbFactory, decision, cancellationToken).ConfigureAwait(false);
                if (migration?.CurrentState != MigrationStateName.Completed)
                {
                    migrationOutcome = migration is null ? "never started" : $"{migration.CurrentState}{(migration.Reason is { } why ? ": " + why : "")}";
                }
            }
            else if (decision.Decision != DecisionKind.Migrate)
            {
                migrationOutcome = $"the job decided {decision.Decision}";
            }

            Console.WriteLine();
            Console.WriteLine("[demo] round 2: the same prompts");
            var round2 = await RoundAsync(client.Bus, requests, maxTokens, round1, cancellationToken).ConfigureAwait(false);
            var share2 = LocalShare(round2);
            var same = round1.Zip(round2).All(p => p.First.Answer.TokenIds.SequenceEqual(p.Second.Answer.TokenIds));
            Console.WriteLine($"[demo] round 2: {Percent(share2)} of the expert calls local ({PerEdge(round2)}); answers {(same ? "identical to round 1 (token ids)" : "DIFFERENT from round 1")}");
            Console.WriteLine();

            var summary = $"local share of expert calls {Percent(share1)} -> {Percent(share2)}";
            if (!same)
            {
                outcome = ExitCodes.Failed;
                summary += "; ANSWERS CHANGED (greedy decoding: a placement must never change an answer)";
            }
            else if (migrationOutcome is not null)
            {
                summary += $"; no migration: {migrationOutcome}";
                outcome = decision.Status == DecisionStatus.PendingSaga ? ExitCodes.Failed : ExitCodes.Ok;
            }

            finalLine = summary;
        }
        finally
        {
            if (edgesStarted && !keep)
            {
                await ClusterCommand.DownAsync(CancellationToken.None).ConfigureAwait(false);
            }

            await coordinator.StopAsync(CancellationToken.None).ConfigureAwait(false);
            Console.WriteLine(keep && edgesStarted
                ? "[demo] --keep: the edges keep running and serving their placement (./dancemoe cluster down stops them); the coordinator stopped with the demo (no placement job, no migration until ./dancemoe coordinator runs)"
                : "[demo] edges and coordinator stopped (--keep leaves the edges running)");
        }

        Console.WriteLine($"[demo] history: psql \"{CliEnvironment.PostgresUrl}\" -c 'select * from placement_decisions order by id desc limit 1'");
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[demo] {finalLine}; done in {clock.Elapsed.TotalSeconds:F1} s"));
        return outcome;
    }

    private sealed record Answered(string Edge, string Domain, string Prompt, TextGenerated Answer);

    /// <summary>One request per edge, one after the other; round 2 prints only its figures and whether the tokens are round 1's.</summary>
    private static async Task<List<Answered>> RoundAsync(
        IBus bus, List<(string Edge, string Domain, string Prompt)> requests, int maxTokens, List<Answered>? before, CancellationToken cancellationToken)
    {
        var answers = new List<Answered>();
        foreach (var (edge, domain, prompt) in requests)
        {
            var answer = await InferCommand.SendAsync(bus, edge, new GenerateText
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
                Console.WriteLine($"[{edge}] {domain}: {Printable(prompt)}");
                Console.WriteLine($"[{edge}]   -> {Printable(answer.Text)}");
                Console.WriteLine($"[{edge}]   {figures}");
            }
            else
            {
                var same = before.Single(b => b.Edge == edge).Answer.TokenIds.SequenceEqual(answer.TokenIds);
                Console.WriteLine($"[{edge}] {figures}; {(same ? "same tokens" : "DIFFERENT TOKENS: " + Printable(answer.Text))}");
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

    private static string PerEdge(List<Answered> round) => string.Join(", ", round.Select(a => $"{a.Edge} {Percent(Share(a.Answer.Stats))}"));

    private static string Percent(double share) => share.ToString("P0", CultureInfo.InvariantCulture);

    private static string Printable(string text) =>
        new(text.Select(c => char.IsControl(c) && c != ' ' ? (c == '\n' ? '↵' : '.') : c).ToArray());

    /// <summary>The coordinator, in this process, on the model's shape: its placement job fires only when the demo asks.</summary>
    private static async Task<IHost> StartCoordinatorAsync(ModelManifest manifest, ILoggerProvider log, CancellationToken cancellationToken)
    {
        var architecture = manifest.Architecture;
        var inv = CultureInfo.InvariantCulture;
        var settings = new Dictionary<string, string?>(StringComparer.Ordinal)
        {
            ["PlacementJob:Layers"] = architecture.NumLayers.ToString(inv),
            ["PlacementJob:Experts"] = architecture.NumExperts.ToString(inv),
            ["PlacementJob:TopK"] = architecture.TopK.ToString(inv),
            ["PlacementJob:ExpertBytes"] = manifest.Experts.Max(e => e.WeightBytes).ToString(inv),
            ["PlacementJob:HiddenBytes"] = (architecture.HiddenSize * (manifest.WeightDtype == "f32" ? 4 : 2)).ToString(inv),
            ["PlacementJob:Cron"] = FarCron,
            ["PlacementJob:WindowMinutes"] = WindowMinutes.ToString(inv),
            ["PlacementJob:HalfLifeMinutes"] = HalfLifeMinutes.ToString(inv),

            // A load takes well under a second here; a shorter deadline than the default 60 s ends sooner a migration an
            // interrupted earlier run left behind (the demo waits for it before it starts).
            ["Migration:LoadTimeoutSeconds"] = "20",
        };
        var configuration = new ConfigurationBuilder().AddConfiguration(CliEnvironment.Configuration).AddInMemoryCollection(settings).Build();
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
            throw new CliException($"the coordinator cannot start on {DbCommand.Redact(CliEnvironment.RabbitMqUri)}: {ex.Message}", ExitCodes.Unavailable, ex);
        }
    }

    /// <summary>A migration an interrupted earlier run left running blocks the job: the coordinator's timeout job ends it.</summary>
    private static async Task WaitForEarlierMigrationsAsync(IDbContextFactory<DanceMoEDbContext> dbFactory, CancellationToken cancellationToken)
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
                    Console.WriteLine($"[demo] it ended after {clock.Elapsed.TotalSeconds:F0} s");
                }

                return;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new CliException($"migration {left.CorrelationId} of an earlier run is still {left.CurrentState} after 3 minutes (./dancemoe status)");
            }

            if (!told)
            {
                Console.WriteLine($"[demo] migration {left.CorrelationId} of an earlier run is still {left.CurrentState}: waiting until the coordinator's timeouts end it...");
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
        await using var connection = new NpgsqlConnection(DatabaseOptions.ToNpgsql(CliEnvironment.PostgresUrl));
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
                throw new CliException($"the edges recorded {recorded} of round 1's {expected} expert activations within 30 s: are their trace writers up? (logs in {ClusterCommand.ClusterDirectory})");
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
                throw new CliException($"the coordinator has not heard {string.Join(", ", missing)} route by placement v{version} within 30 s");
            }

            await Task.Delay(200, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Follows the saga the decision started to Completed or Failed, with its progress every few seconds; null if it never started.</summary>
    private static async Task<MigrationState?> WaitForMigrationAsync(IDbContextFactory<DanceMoEDbContext> dbFactory, PlacementDecision decision, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        TimeSpan? lastPrint = null;
        MigrationState? last = null;
        while (true)
        {
            await using (var db = await dbFactory.CreateDbContextAsync(cancellationToken).ConfigureAwait(false))
            {
                last = await db.Migrations.AsNoTracking().SingleOrDefaultAsync(m => m.CorrelationId == decision.MigrationId, cancellationToken).ConfigureAwait(false) ?? last;
            }

            if (last is not null)
            {
                var moves = MigrationProgress.Moves(last.Moves);
                var loads = moves.Count(x => x.Action == MigrationProgress.Load);
                var progress = string.Create(CultureInfo.InvariantCulture, $"loads {last.LoadsDone}/{loads}, unloads {last.UnloadsDone}/{moves.Count - loads}");
                if (MigrationStateName.IsFinal(last.CurrentState))
                {
                    var took = ((last.FinishedAt ?? DateTimeOffset.UtcNow) - last.StartedAt).TotalSeconds;
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"[demo] migration {last.CurrentState} in {took:F1} s: {progress}; placement v{last.ActivatedVersion?.ToString(CultureInfo.InvariantCulture) ?? "-"} active{(last.Reason is { } why ? "; " + why : "")}"));
                    return last;
                }

                if (lastPrint is null || clock.Elapsed - lastPrint >= TimeSpan.FromSeconds(4))
                {
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[demo] migration {last.CurrentState}: {progress} ({clock.Elapsed.TotalSeconds:F0} s)"));
                    lastPrint = clock.Elapsed;
                }
            }
            else if (clock.Elapsed > TimeSpan.FromSeconds(60))
            {
                Console.WriteLine($"[demo] no migration saga started within 60 s (see {Path.Combine(ModelCatalog.StateDirectory, "demo", "coordinator.log")})");
                return null;
            }

            if (clock.Elapsed > MigrationTimeout)
            {
                Console.WriteLine($"[demo] migration still {last?.CurrentState} after {MigrationTimeout.TotalSeconds:F0} s: not waiting any longer");
                return last;
            }

            await Task.Delay(250, cancellationToken).ConfigureAwait(false);
        }
    }

    private static async Task StartServicesAsync(CancellationToken cancellationToken)
    {
        var script = Path.Combine(CliEnvironment.RepositoryRoot, "scripts", "services.sh");
        using var process = Process.Start(new ProcessStartInfo(script, "up") { UseShellExecute = false })
            ?? throw new CliException($"cannot run {script}");
        await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        if (process.ExitCode != 0)
        {
            throw new CliException($"services up failed (exit {process.ExitCode}); see the messages above", ExitCodes.Unavailable);
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

    /// <summary>The in-process coordinator's log, one line per entry, in a file: the demo's own output stays short.</summary>
    private sealed class FileLoggerProvider(string path) : ILoggerProvider
    {
        private readonly StreamWriter _writer = new(new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read)) { AutoFlush = true };
        private readonly Lock _lock = new();

        public ILogger CreateLogger(string categoryName) => new FileLogger(this, categoryName);

        public void Dispose()
        {
            lock (_lock)
            {
                _writer.Dispose();
            }
        }

        private void Write(LogLevel level, string category, string message, Exception? exception)
        {
            var line = string.Create(CultureInfo.InvariantCulture, $"{DateTimeOffset.Now:HH:mm:ss.fff} {level.ToString().ToLowerInvariant()[..4]} {category}: {message}");
            lock (_lock)
            {
                try
                {
                    _writer.WriteLine(exception is null ? line : line + Environment.NewLine + exception);
                }
                catch (ObjectDisposedException)
                {
                    // A late entry after the demo closed the log.
                }
            }
        }

        private sealed class FileLogger(FileLoggerProvider provider, string category) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                ArgumentNullException.ThrowIfNull(formatter);
                if (IsEnabled(logLevel))
                {
                    provider.Write(logLevel, category, formatter(state, exception), exception);
                }
            }
        }
    }
}
