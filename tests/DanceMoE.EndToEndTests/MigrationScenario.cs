using System.Collections.Concurrent;
using DanceMoE.Contracts;
using DanceMoE.Data;
using DanceMoE.Edge;
using DanceMoE.Hosting;
using DanceMoE.IntegrationTests;
using DanceMoE.Migrations;
using DanceMoE.Operations;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;

namespace DanceMoE.EndToEndTests;

/// <summary>
/// Two real edges and a real coordinator on the tiny model (4 layers x 16 experts). The edges start from a bootstrap
/// file, edge-1 holding experts 0-7 of every layer and edge-2 experts 8-15, with room for 5 experts more each. The
/// recorded history says edge-1's requests moved from experts 0 and 1 of layers 0 and 1 to experts 8 and 9 there, so
/// the placement job wants them on edge-1: a migration that loads and unloads experts while requests keep coming.
/// </summary>
public sealed class MigrationScenario : IAsyncDisposable
{
    public static readonly string[] Edges = ["edge-1", "edge-2"];
    public static readonly string[] Prompts = ["migrations keep answers", "the same tokens", "experts move, requests stay"];
    public const int MaxTokens = 10;

    // 14 MiB hold 37 of the tiny model's 0.375 MiB experts: the 32 of the bootstrap and 5 more.
    public const int MemoryMb = 14;

    private readonly ConcurrentDictionary<string, EdgeHeartbeat> _beats = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<string> _violations = new();
    private ServiceProvider? _monitor;

    private MigrationScenario(EdgeCluster cluster, IsolatedDatabase database, CoordinatorProcess coordinator)
    {
        Cluster = cluster;
        Database = database;
        Coordinator = coordinator;
    }

    public EdgeCluster Cluster { get; }

    public IsolatedDatabase Database { get; }

    public CoordinatorProcess Coordinator { get; }

    public Dictionary<string, IReadOnlyList<int>> Oracle { get; } = [];

    /// <summary>Each edge's <c>--metrics-port</c> (a restarted edge keeps its own).</summary>
    public Dictionary<string, int> MetricsPorts { get; } = [];

    /// <summary>The sum over the edges of one series of their <c>/metrics</c> (0 where an edge has not written it).</summary>
    public async Task<double> EdgesMetricAsync(string series)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(20) };
        var sum = 0.0;
        foreach (var port in MetricsPorts.Values)
        {
            sum += MetricsTests.Parse(await http.GetStringAsync(FormattableString.Invariant($"http://127.0.0.1:{port}/metrics"))).GetValueOrDefault(series);
        }

        return sum;
    }

    /// <summary>Moments when the edges' heartbeats showed an expert without a loaded replica or an edge over its budget.</summary>
    public IReadOnlyCollection<string> InvariantViolations => _violations;

    public static async Task<MigrationScenario> StartAsync(double loadMsPerMb, params string[] coordinatorArguments)
    {
        var cluster = await EdgeCluster.CreateAsync(seed: 41);
        var database = new IsolatedDatabase();
        await database.InitializeAsync();
        await DatabaseMigrator.MigrateAsync(database.ConnectionString, TimeSpan.FromSeconds(30), CancellationToken.None);
        var a = cluster.Manifest.Architecture;
        var assignments = Enumerable.Range(0, a.NumLayers).SelectMany(l => Enumerable.Range(0, a.NumExperts)
            .Select(e => new ExpertAssignment { Layer = l, Expert = e, Servers = [e < a.NumExperts / 2 ? Edges[0] : Edges[1]] }));
        var bootstrap = cluster.WritePlacement("bootstrap.json", new EdgePlacement(1, assignments));
        var coordinator = new CoordinatorProcess(cluster.Directory, cluster.VirtualHost.Uri, database.ConnectionString, cluster.ModelDirectory, coordinatorArguments);
        var scenario = new MigrationScenario(cluster, database, coordinator);
        await scenario.StartMonitorAsync();
        foreach (var edge in Edges)
        {
            scenario.MetricsPorts[edge] = TestPorts.Free();
            await cluster.StartEdgesAsync([edge], bootstrap, deadlineMs: 5000, memoryMb: MemoryMb, traceDatabase: null,
                "--load-ms-per-mb", CoordinatorProcess.Invariant(loadMsPerMb), "--metrics-port", CoordinatorProcess.Invariant(scenario.MetricsPorts[edge]));
        }

        await coordinator.StartAsync();
        foreach (var prompt in Prompts)
        {
            scenario.Oracle[prompt] = await cluster.MonolithicAsync(prompt, MaxTokens);
        }

        await scenario.SeedHistoryAsync();
        await scenario.WaitForAsync(async () => await scenario.KnownEdgesAsync() == Edges.Length, "the coordinator hears both edges");
        return scenario;
    }

    public Task RestartEdgeAsync(string id) => Cluster.RestartAsync(id);

    /// <summary>Asks the coordinator to run the placement job now and returns the decision it records.</summary>
    public async Task<PlacementDecision> RunPlacementNowAsync()
    {
        var commandId = await PlacementJobTrigger.SendAsync(Cluster.Requests, "test", CancellationToken.None);
        try
        {
            return await PlacementJobTrigger.WaitForDecisionAsync(Database.ConnectionString, commandId, TimeSpan.FromSeconds(120), null, CancellationToken.None);
        }
        catch (OperationException ex)
        {
            throw new TimeoutException($"{ex.Message}\ncoordinator:\n{Tail(Coordinator.Log())}", ex);
        }
    }

    /// <summary>
    /// Run-now once the job sees the load: while it skips for want of live edges or of routing in its window (heartbeats
    /// and trace flushes not in yet on a loaded machine), asks again, for at most 30 s; any other decision is returned.
    /// </summary>
    public async Task<PlacementDecision> RunPlacementNowOnceLoadedAsync()
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            var decision = await RunPlacementNowAsync();
            var reason = decision.Reason;
            var waiting = decision.Decision == "skipped"
                && (reason.StartsWith("no live edge", StringComparison.Ordinal) || reason.StartsWith("no activations", StringComparison.Ordinal)
                    || reason.StartsWith("no complete request routing", StringComparison.Ordinal));
            if (!waiting || DateTime.UtcNow > deadline)
            {
                return decision;
            }

            await Task.Delay(500);
        }
    }

    public async Task<MigrationState?> MigrationAsync(Guid id)
    {
        await using var db = Db();
        return await db.Migrations.AsNoTracking().SingleOrDefaultAsync(m => m.CorrelationId == id);
    }

    public Task<MigrationState> WaitForMigrationAsync(Guid id, Func<MigrationState, bool> condition, string what, int seconds = 120) =>
        WaitForAsync(async () => await MigrationAsync(id) is { } m && condition(m) ? m : null, what, seconds);

    public async Task<int?> ActiveVersionAsync()
    {
        await using var db = Db();
        return await db.Placements.Where(p => p.IsActive).Select(p => (int?)p.Version).SingleOrDefaultAsync();
    }

    /// <summary>Runs <c>dancemoe status --json</c> against the scenario's database and returns its document.</summary>
    public async Task<System.Text.Json.JsonDocument> StatusAsync()
    {
        var start = new System.Diagnostics.ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in new[] { Path.Combine(AppContext.BaseDirectory, "dancemoe.dll"), "status", "--json", "--heartbeat-seconds", "1" })
        {
            start.ArgumentList.Add(argument);
        }

        start.Environment["ConnectionStrings__postgres"] = Database.ConnectionString;
        using var process = System.Diagnostics.Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.True(process.ExitCode == 0, $"status exited {process.ExitCode}: {await stderr}");
        return System.Text.Json.JsonDocument.Parse(await stdout);
    }

    public DanceMoEDbContext Db() => DanceMoEDbContext.Create(Database.ConnectionString);

    /// <summary>Requests on every edge, one after another per edge, until <paramref name="stop"/>; every answer or failure is returned.</summary>
    public async Task<List<(string Edge, string Prompt, TextGenerated? Answer, Exception? Error)>> LoadAsync(CancellationToken stop)
    {
        var results = new ConcurrentBag<(string, string, TextGenerated?, Exception?)>();
        await Task.WhenAll(Edges.Select(async edge =>
        {
            for (var i = 0; !stop.IsCancellationRequested; i++)
            {
                var prompt = Prompts[i % Prompts.Length];
                try
                {
                    results.Add((edge, prompt, await Cluster.GenerateAsync(edge, prompt, MaxTokens, TimeSpan.FromSeconds(60)), null));
                }
                catch (Exception ex) when (ex is RequestFaultException or RequestTimeoutException)
                {
                    results.Add((edge, prompt, null, ex));
                }
            }
        }));
        return [.. results];
    }

    public async Task<T> WaitForAsync<T>(Func<Task<T?>> probe, string what, int seconds = 120)
        where T : class
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (true)
        {
            if (await probe() is { } result)
            {
                return result;
            }

            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting until {what}\ncoordinator:\n{Tail(Coordinator.Log())}");
            await Task.Delay(100);
        }
    }

    public async Task WaitForAsync(Func<Task<bool>> probe, string what, int seconds = 120) =>
        await WaitForAsync(async () => await probe() ? (object)true : null, what, seconds);

    public static string Tail(string log) => log.Length > 4000 ? log[^4000..] : log;

    private async Task<int> KnownEdgesAsync()
    {
        await using var db = Db();
        var since = DateTimeOffset.UtcNow.AddSeconds(-3);
        return await db.EdgeServers.CountAsync(e => e.LastSeenAt > since);
    }

    /// <summary>A minute of history: edge-1's requests on experts 0-7, but 2-9 in layers 0 and 1; edge-2's on experts 8-15.</summary>
    private async Task SeedHistoryAsync()
    {
        var a = Cluster.Manifest.Architecture;
        var now = DateTimeOffset.UtcNow;
        var minute = new DateTimeOffset(now.Year, now.Month, now.Day, now.Hour, now.Minute, 0, TimeSpan.Zero);
        await using var db = Db();
        for (short layer = 0; layer < a.NumLayers; layer++)
        {
            for (short expert = 0; expert < a.NumExperts; expert++)
            {
                var shifted = layer < 2 ? expert is >= 2 and < 10 : expert < 8;
                db.ActivationCounts.Add(new ActivationCount { Bucket = minute.AddMinutes(-1), OriginEdge = Edges[0], Layer = layer, Expert = expert, Count = shifted ? 100_000 : 10 });
                db.ActivationCounts.Add(new ActivationCount { Bucket = minute.AddMinutes(-1), OriginEdge = Edges[1], Layer = layer, Expert = expert, Count = expert >= 8 ? 100_000 : 10 });
            }
        }

        await db.SaveChangesAsync();
    }

    private async Task StartMonitorAsync()
    {
        var a = Cluster.Manifest.Architecture;
        _monitor = new ServiceCollection()
            .AddMassTransit(bus => bus.UsingRabbitMq((_, cfg) =>
            {
                new RabbitMqOptions { ConnectionString = Cluster.VirtualHost.Uri }.ConfigureHost(cfg);
                cfg.ReceiveEndpoint("test-invariants", e => e.Handler<EdgeHeartbeat>(context =>
                {
                    var beat = context.Message;
                    _beats[beat.EdgeId] = beat;
                    if (beat.MemoryUsedBytes > beat.MemoryBudgetBytes)
                    {
                        _violations.Enqueue($"{beat.EdgeId} uses {beat.MemoryUsedBytes} bytes of a {beat.MemoryBudgetBytes} budget at {beat.SentAt:O}");
                    }

                    // Only once both edges have been heard from and are fresh: a killed edge's copies are gone on purpose.
                    var fresh = _beats.Values.Where(b => beat.SentAt - b.SentAt < TimeSpan.FromSeconds(3)).ToList();
                    if (fresh.Count == Edges.Length)
                    {
                        var loaded = fresh.SelectMany(b => b.LoadedExperts).ToHashSet(StringComparer.Ordinal);
                        for (var l = 0; l < a.NumLayers; l++)
                        {
                            for (var x = 0; x < a.NumExperts; x++)
                            {
                                if (!loaded.Contains($"{l}:{x}"))
                                {
                                    _violations.Enqueue($"expert {l}.{x} loaded nowhere at {beat.SentAt:O}");
                                }
                            }
                        }
                    }

                    return Task.CompletedTask;
                }));
            }))
            .BuildServiceProvider(true);
        await _monitor.GetRequiredService<IBusControl>().StartAsync();
    }

    public async ValueTask DisposeAsync()
    {
        await Coordinator.DisposeAsync();
        if (_monitor is not null)
        {
            await _monitor.GetRequiredService<IBusControl>().StopAsync();
            await _monitor.DisposeAsync();
        }

        await Cluster.DisposeAsync();
        await Database.DisposeAsync();
    }
}
