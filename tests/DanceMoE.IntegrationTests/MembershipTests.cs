using DanceMoE.Contracts;
using DanceMoE.Coordinator;
using DanceMoE.Data;
using DanceMoE.Hosting;
using DanceMoE.Migrations;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;

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
        await using var provider = new ServiceCollection()
            .AddDbContextFactory<DanceMoEDbContext>(b => DanceMoEDbContext.Configure(b, fixture.Database.ConnectionString))
            .AddSingleton<ClusterMembership>()
            .Configure<MembershipOptions>(_ => { })
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
        var bus = provider.GetRequiredService<IBusControl>();
        var consumed = new ConsumedHeartbeats();
        bus.ConnectConsumeMessageObserver(consumed);
        await bus.StartAsync();
        try
        {
            var first = new DateTimeOffset(2026, 11, 25, 10, 0, 0, TimeSpan.Zero);
            await bus.Publish(Beat("edge-1", first, usedMb: 10));
            await bus.Publish(Beat("edge-2", first, usedMb: 20));
            await bus.Publish(Beat("edge-1", first.AddSeconds(5), usedMb: 30));

            // All three consumed, in whatever order the endpoint's concurrent consumers finished them.
            var rows = await WaitForAsync(async db =>
                consumed.Count == 3 ? await db.EdgeServers.AsNoTracking().OrderBy(e => e.Id).ToListAsync() : null);

            Assert.Equal(["edge-1", "edge-2"], rows.Select(r => r.Id));
            Assert.Equal(first, rows[0].FirstSeenAt);
            Assert.Equal(30L << 20, rows[0].MemoryUsedBytes);
            Assert.Equal(20L << 20, rows[1].MemoryUsedBytes);
        }
        finally
        {
            await bus.StopAsync();
        }
    }

    private sealed class ConsumedHeartbeats : IConsumeMessageObserver<EdgeHeartbeat>
    {
        private int _count;

        public int Count => Volatile.Read(ref _count);

        public Task PreConsume(ConsumeContext<EdgeHeartbeat> context) => Task.CompletedTask;

        public Task PostConsume(ConsumeContext<EdgeHeartbeat> context)
        {
            Interlocked.Increment(ref _count);
            return Task.CompletedTask;
        }

        public Task ConsumeFault(ConsumeContext<EdgeHeartbeat> context, Exception exception) => Task.CompletedTask;
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
