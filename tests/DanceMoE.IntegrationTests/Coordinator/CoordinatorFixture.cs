using DanceMoE.Contracts;
using DanceMoE.Coordinator;
using DanceMoE.Data;
using DanceMoE.Hosting;
using DanceMoE.Migrations;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace DanceMoE.IntegrationTests.Coordinator;

/// <summary>
/// A real coordinator host on its own virtual host and database, with two pretend edges (<c>edge-a</c>, <c>edge-b</c>)
/// that acknowledge placements the way edges do. The cron trigger lies in 2099: only the tests fire the job.
/// Model: 2 layers x 4 experts, top-2, <see cref="ExpertBytes"/> per expert; each edge's budget holds <see cref="Slots"/> experts.
/// </summary>
public class CoordinatorFixture : IAsyncLifetime
{
    public static readonly string[] EdgeIds = ["edge-a", "edge-b"];

    private ServiceProvider? _edges;

    public IsolatedVirtualHost VirtualHost { get; } = new();

    public IsolatedDatabase Database { get; } = new();

    public IHost Host { get; private set; } = null!;

    public virtual long ExpertBytes => 1000;

    /// <summary>Experts an edge's budget holds.</summary>
    public virtual int Slots => 4;

    public IBusControl EdgeBus { get; private set; } = null!;

    public virtual string Algorithm => "dancemoe";

    /// <summary>More configuration for the coordinator, over the fixture's own.</summary>
    protected virtual IReadOnlyDictionary<string, string?> ExtraSettings => new Dictionary<string, string?>();

    public virtual async Task InitializeAsync()
    {
        await VirtualHost.InitializeAsync();
        await Database.InitializeAsync();
        await DatabaseMigrator.MigrateAsync(Database.ConnectionString, TimeSpan.FromSeconds(10), CancellationToken.None);
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ConnectionStrings:rabbitmq"] = VirtualHost.Uri,
            ["ConnectionStrings:postgres"] = Database.ConnectionString,
            ["Membership:HeartbeatSeconds"] = "3600",
            ["Membership:MissedHeartbeats"] = "3",
            ["PlacementJob:Cron"] = "0 0 0 1 1 ? 2099",
            ["PlacementJob:Algorithm"] = Algorithm,
            ["PlacementJob:Layers"] = "2",
            ["PlacementJob:Experts"] = "4",
            ["PlacementJob:TopK"] = "2",
            ["PlacementJob:ExpertBytes"] = ExpertBytes.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["PlacementJob:HorizonSeconds"] = "300",
        }).AddInMemoryCollection(ExtraSettings).Build();
        Host = CoordinatorHost.Build(configuration, l => l.SetMinimumLevel(LogLevel.Warning));
        await Host.StartAsync();

        _edges = new ServiceCollection()
            .AddMassTransit(bus => bus.UsingRabbitMq((_, cfg) =>
            {
                new RabbitMqOptions { ConnectionString = VirtualHost.Uri }.ConfigureHost(cfg);
                foreach (var edge in EdgeIds)
                {
                    cfg.ReceiveEndpoint($"{edge}-control", e =>
                    {
                        // One message at a time, like an edge's control queue: acknowledgements leave in order.
                        e.ConcurrentMessageLimit = 1;
                        ConfigureEdge(e, edge);
                    });
                }
            }))
            .BuildServiceProvider(true);
        EdgeBus = _edges.GetRequiredService<IBusControl>();
        await EdgeBus.StartAsync();
    }

    /// <summary>
    /// What a pretend edge answers on its control queue: placements, followed and acknowledged as edges do (the latest
    /// activation wins, and the answer names the version the edge routes by).
    /// </summary>
    protected virtual void ConfigureEdge(IReceiveEndpointConfigurator endpoint, string edge)
    {
        var current = (Version: 0, At: DateTimeOffset.MinValue);
        var gate = new object();
        endpoint.Handler<PlacementActivated>(context =>
        {
            int routes;
            lock (gate)
            {
                var message = context.Message;
                if (message.ActivatedAt > current.At || (message.ActivatedAt == current.At && message.Version > current.Version))
                {
                    current = (message.Version, message.ActivatedAt);
                }

                routes = current.Version;
            }

            return context.Publish(new PlacementApplied { EdgeId = edge, Version = routes });
        });
    }

    public virtual async Task DisposeAsync()
    {
        await EdgeBus.StopAsync();
        await _edges!.DisposeAsync();
        await Host.StopAsync();
        Host.Dispose();
        await VirtualHost.DisposeAsync();
        await Database.DisposeAsync();
    }

    public T Get<T>()
        where T : notnull => Host.Services.GetRequiredService<T>();

    public DanceMoEDbContext Db() => DanceMoEDbContext.Create(Database.ConnectionString);

    /// <summary>Heartbeats through the bus; returns once the coordinator's membership has them.</summary>
    public async Task BeatAsync(DateTimeOffset sentAt, params (string Edge, string[] Loaded)[] edges)
    {
        foreach (var (edge, loaded) in edges)
        {
            await EdgeBus.Publish(new EdgeHeartbeat
            {
                EdgeId = edge,
                MemoryBudgetBytes = Slots * ExpertBytes,
                MemoryUsedBytes = loaded.Length * ExpertBytes,
                LoadedExperts = loaded,
                ExecutionProvider = "cpu",
                SentAt = sentAt,
            });
        }

        var membership = Get<ClusterMembership>();
        await WaitForAsync(
            () => Task.FromResult(edges.All(e => membership.Snapshot(sentAt).Any(m => m.EdgeId == e.Edge && m.LastSeenAt >= sentAt)) ? (object)true : null),
            "heartbeats reach the coordinator's membership");
    }

    /// <summary>Counts edge-a mostly activating experts 0 and 1 of each layer, edge-b experts 2 and 3 (swapped, times <paramref name="scale"/>).</summary>
    public async Task SeedActivationsAsync(DateTimeOffset bucket, bool swapped = false, long scale = 1)
    {
        await using var db = Db();
        for (short layer = 0; layer < 2; layer++)
        {
            for (short expert = 0; expert < 4; expert++)
            {
                var low = expert < 2 != swapped;
                db.ActivationCounts.Add(new ActivationCount { Bucket = bucket, OriginEdge = "edge-a", Layer = layer, Expert = expert, Count = scale * (low ? 100 : 3) });
                db.ActivationCounts.Add(new ActivationCount { Bucket = bucket, OriginEdge = "edge-b", Layer = layer, Expert = expert, Count = scale * (low ? 2 : 90) });
            }
        }

        await db.SaveChangesAsync();
    }

    public async Task<List<PlacementDecision>> DecisionsAsync()
    {
        await using var db = Db();
        return await db.PlacementDecisions.AsNoTracking().OrderBy(d => d.Id).ToListAsync();
    }

    public static async Task<T> WaitForAsync<T>(Func<Task<T?>> probe, string what)
        where T : class
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            if (await probe() is { } result)
            {
                return result;
            }

            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting until {what}");
            await Task.Delay(50);
        }
    }
}
