using DanceMoE.Contracts;
using DanceMoE.Coordinator;
using DanceMoE.Data;
using DanceMoE.Hosting;
using DanceMoE.Migrations;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DanceMoE.IntegrationTests;

public sealed class MembershipFixture : IAsyncLifetime
{
    public IsolatedVirtualHost VirtualHost { get; } = new();

    public IsolatedDatabase Database { get; } = new();

    public async Task InitializeAsync()
    {
        await VirtualHost.InitializeAsync();
        await Database.InitializeAsync();
        await DatabaseMigrator.MigrateAsync(Database.ConnectionString, TimeSpan.FromSeconds(10), CancellationToken.None);
    }

    public async Task DisposeAsync()
    {
        await VirtualHost.DisposeAsync();
        await Database.DisposeAsync();
    }
}

public sealed class MembershipTests(MembershipFixture fixture) : IClassFixture<MembershipFixture>
{
    [Fact]
    public async Task Heartbeats_published_on_the_bus_become_one_edge_servers_row_per_edge()
    {
        var (provider, bus, consumed) = await StartConsumersAsync(new ClusterMembership(Options.Create(new MembershipOptions())));
        await using var stopped = provider;
        try
        {
            var first = new DateTimeOffset(2026, 11, 25, 10, 0, 0, TimeSpan.Zero);
            await bus.Publish(Beat("edge-1", first, usedMb: 10));
            await bus.Publish(Beat("edge-2", first, usedMb: 20));
            await bus.Publish(Beat("edge-1", first.AddSeconds(5), usedMb: 30) with { HeartbeatSeconds = 7.5 });

            // All three consumed, in whatever order the endpoint's concurrent consumers finished them.
            var rows = await WaitForAsync(async db =>
                consumed.Count == 3 ? await db.EdgeServers.AsNoTracking().Where(e => e.Id == "edge-1" || e.Id == "edge-2").OrderBy(e => e.Id).ToListAsync() : null);

            Assert.Equal(["edge-1", "edge-2"], rows.Select(r => r.Id));
            Assert.Equal(first, rows[0].FirstSeenAt);
            Assert.Equal(30L << 20, rows[0].MemoryUsedBytes);
            Assert.Equal(20L << 20, rows[1].MemoryUsedBytes);
            Assert.Equal(7.5, rows[0].HeartbeatSeconds);
            Assert.Equal(0, rows[1].HeartbeatSeconds);
        }
        finally
        {
            await bus.StopAsync();
        }
    }

    [Fact]
    public async Task Malformed_and_future_dated_heartbeats_are_consumed_without_counting_and_the_next_good_one_counts()
    {
        var membership = new ClusterMembership(Options.Create(new MembershipOptions()));
        var (provider, bus, consumed) = await StartConsumersAsync(membership);
        await using var stopped = provider;
        try
        {
            var now = DateTimeOffset.UtcNow;
            await bus.Publish(Beat("edge-7", now.AddHours(1), usedMb: 1));
            await bus.Publish(Beat("../edge-8", now, usedMb: 1));
            await bus.Publish(Beat("edge-9", now, usedMb: 1) with { LoadedExperts = ["0:1", "drop table"] });
            await bus.Publish(Beat("edge-7", now, usedMb: 7));

            var row = await WaitForAsync(async db =>
                consumed.Count == 4 ? await db.EdgeServers.AsNoTracking().SingleOrDefaultAsync(e => e.Id == "edge-7") : null);

            Assert.Equal(7L << 20, row.MemoryUsedBytes);
            await using var db = DanceMoEDbContext.Create(fixture.Database.ConnectionString);
            Assert.False(await db.EdgeServers.AnyAsync(e => e.Id == "../edge-8" || e.Id == "edge-9"));
            var member = Assert.Single(membership.Snapshot(now), e => e.EdgeId is "edge-7" or "../edge-8" or "edge-9");
            Assert.Equal("edge-7", member.EdgeId);
            Assert.Equal(now, member.LastSeenAt);
        }
        finally
        {
            await bus.StopAsync();
        }
    }

    [Fact]
    public async Task Heartbeats_while_PostgreSQL_is_unreachable_still_count_fault_none_and_log_the_outage_once()
    {
        var membership = new ClusterMembership(Options.Create(new MembershipOptions()));
        var (provider, bus, consumed) = await StartConsumersAsync(membership, "postgresql://dancemoe:dancemoe@127.0.0.1:1/nowhere");
        await using var stopped = provider;
        try
        {
            var now = DateTimeOffset.UtcNow;
            for (var i = 0; i < 3; i++)
            {
                await bus.Publish(Beat("edge-11", now.AddSeconds(i), usedMb: 11));
            }

            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (consumed.Count + consumed.Faults < 3)
            {
                Assert.True(DateTime.UtcNow < deadline, $"{consumed.Count} heartbeats consumed and {consumed.Faults} faulted within 30 s");
                await Task.Delay(100);
            }

            Assert.Equal(0, consumed.Faults);
            Assert.Equal(now.AddSeconds(2), Assert.Single(membership.Snapshot(now), e => e.EdgeId == "edge-11").LastSeenAt);
            var logs = provider.GetFakeLogCollector().GetSnapshot();
            var warning = Assert.Single(logs, r => r.Category == typeof(EdgeHeartbeatConsumer).FullName);
            Assert.Equal(LogLevel.Warning, warning.Level);
            Assert.Contains("recording heartbeats in edge_servers failed", warning.Message, StringComparison.Ordinal);
            Assert.DoesNotContain(logs, r => r.Level >= LogLevel.Warning && r.Category?.StartsWith("MassTransit", StringComparison.Ordinal) == true);
        }
        finally
        {
            await bus.StopAsync();
        }
    }

    [Fact]
    public async Task At_start_the_coordinator_learns_from_edge_servers_which_slow_edges_warm_up_must_wait_for()
    {
        var clock = new ManualClock();
        var start = clock.GetUtcNow();
        // A database of its own: the newest row of edge_servers is where "alive" is measured from.
        var database = new IsolatedDatabase();
        await database.InitializeAsync();
        try
        {
            await DatabaseMigrator.MigrateAsync(database.ConnectionString, TimeSpan.FromSeconds(10), CancellationToken.None);
            await using (var db = DanceMoEDbContext.Create(database.ConnectionString))
            {
                db.EdgeServers.Add(new EdgeServer { Id = "edge-slow", ExecutionProvider = "cpu", LastSeenAt = start.AddSeconds(-30), HeartbeatSeconds = 60 });
                db.EdgeServers.Add(new EdgeServer { Id = "edge-fast", ExecutionProvider = "cpu", LastSeenAt = start.AddSeconds(-1), HeartbeatSeconds = 2 });
                await db.SaveChangesAsync();
            }

            var membership = new ClusterMembership(Options.Create(new MembershipOptions { HeartbeatSeconds = 2, MissedHeartbeats = 3 }), clock);
            await using var provider = new ServiceCollection()
                .AddLogging()
                .AddDbContextFactory<DanceMoEDbContext>(b => DanceMoEDbContext.Configure(b, database.ConnectionString))
                .BuildServiceProvider();
            await ActivatorUtilities.CreateInstance<MembershipWarmUp>(provider, membership).StartAsync(CancellationToken.None);

            Assert.False(membership.IsWarm(start.AddSeconds(179)), "edge-slow beats every 60 s: warm-up waits 3 of them unless it is heard");
            Assert.True(membership.IsWarm(start.AddSeconds(180)));
            membership.Record(new EdgeHeartbeat { EdgeId = "edge-slow", ExecutionProvider = "cpu", HeartbeatSeconds = 60, SentAt = start.AddSeconds(1) });
            Assert.True(membership.IsWarm(start.AddSeconds(6)));
        }
        finally
        {
            await database.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_database_that_does_not_answer_at_start_leaves_warm_up_at_the_coordinators_own_heartbeats()
    {
        var clock = new ManualClock();
        var membership = new ClusterMembership(Options.Create(new MembershipOptions { HeartbeatSeconds = 2, MissedHeartbeats = 3 }), clock);
        await using var provider = new ServiceCollection()
            .AddFakeLogging()
            .AddDbContextFactory<DanceMoEDbContext>(b => DanceMoEDbContext.Configure(b, "postgresql://dancemoe:dancemoe@127.0.0.1:1/nowhere"))
            .BuildServiceProvider();

        await ActivatorUtilities.CreateInstance<MembershipWarmUp>(provider, membership).StartAsync(CancellationToken.None);

        Assert.True(membership.IsWarm(clock.GetUtcNow().AddSeconds(6)));
        var warning = Assert.Single(provider.GetFakeLogCollector().GetSnapshot(), r => r.Category == typeof(MembershipWarmUp).FullName);
        Assert.Equal(LogLevel.Warning, warning.Level);
    }

    /// <summary>Starts <see cref="HeartbeatConsumers"/>' bus, counting the heartbeats it consumes and faults.</summary>
    private async Task<(ServiceProvider Provider, IBusControl Bus, ConsumedHeartbeats Consumed)> StartConsumersAsync(ClusterMembership membership, string? database = null)
    {
        var provider = HeartbeatConsumers(membership, database);
        var bus = provider.GetRequiredService<IBusControl>();
        var consumed = new ConsumedHeartbeats();
        bus.ConnectConsumeMessageObserver(consumed);
        await bus.StartAsync();
        return (provider, bus, consumed);
    }

    /// <summary>The coordinator's heartbeat consumer alone, on the fixture's virtual host and database (or <paramref name="database"/>).</summary>
    private ServiceProvider HeartbeatConsumers(ClusterMembership membership, string? database = null) => new ServiceCollection()
        .AddFakeLogging()
        .AddDbContextFactory<DanceMoEDbContext>(b => DanceMoEDbContext.Configure(b, database ?? fixture.Database.ConnectionString))
        .AddSingleton(membership)
        .AddSingleton(typeof(OutageLog<>))
        .AddMassTransit(bus =>
        {
            bus.AddConsumer<EdgeHeartbeatConsumer, EdgeHeartbeatConsumerDefinition>();
            bus.UsingRabbitMq((context, cfg) =>
            {
                new RabbitMqOptions { ConnectionString = fixture.VirtualHost.Uri }.ConfigureHost(cfg);
                cfg.ConfigureEndpoints(context);
            });
        })
        .BuildServiceProvider(true);

    private sealed class ConsumedHeartbeats : IConsumeMessageObserver<EdgeHeartbeat>
    {
        private int _count;
        private int _faults;

        public int Count => Volatile.Read(ref _count);

        public int Faults => Volatile.Read(ref _faults);

        public Task PreConsume(ConsumeContext<EdgeHeartbeat> context) => Task.CompletedTask;

        public Task PostConsume(ConsumeContext<EdgeHeartbeat> context)
        {
            Interlocked.Increment(ref _count);
            return Task.CompletedTask;
        }

        public Task ConsumeFault(ConsumeContext<EdgeHeartbeat> context, Exception exception)
        {
            Interlocked.Increment(ref _faults);
            return Task.CompletedTask;
        }
    }

    private static EdgeHeartbeat Beat(string id, DateTimeOffset at, int usedMb) => new()
    {
        EdgeId = id,
        MemoryBudgetBytes = 512L << 20,
        MemoryUsedBytes = (long)usedMb << 20,
        ExecutionProvider = "cpu",
        SentAt = at,
    };

    private async Task<T> WaitForAsync<T>(Func<DanceMoEDbContext, Task<T?>> probe)
        where T : class
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (true)
        {
            await using var db = DanceMoEDbContext.Create(fixture.Database.ConnectionString);
            if (await probe(db) is { } result)
            {
                return result;
            }

            Assert.True(DateTime.UtcNow < deadline, "the heartbeats did not reach edge_servers within 30 s");
            await Task.Delay(100);
        }
    }
}
