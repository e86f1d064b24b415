using DanceMoE.Coordinator;
using DanceMoE.Data;
using DanceMoE.Hosting;
using DanceMoE.Migrations;
using DanceMoE.Operations;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace DanceMoE.IntegrationTests.Operations;

/// <summary><c>dancemoe status</c> tells a live edge from a stale one, and a running coordinator from none.</summary>
public sealed class ClusterStatusLivenessTests(IsolatedDatabase database, IsolatedVirtualHost virtualHost)
    : IClassFixture<IsolatedDatabase>, IClassFixture<IsolatedVirtualHost>
{
    private static readonly MembershipOptions Membership = new() { HeartbeatSeconds = 2, MissedHeartbeats = 3 };

    [Fact]
    public async Task An_edge_heard_within_the_timeout_is_live_and_one_heard_before_it_is_stale_with_its_age()
    {
        await DatabaseMigrator.MigrateAsync(database.ConnectionString, TimeSpan.FromSeconds(10), CancellationToken.None);
        // Status reads at the clock's instant: a slow machine between writing these rows and reading them moves no edge's age.
        var clock = new ManualClock();
        var now = clock.GetUtcNow();
        await using (var db = DanceMoEDbContext.Create(database.ConnectionString))
        {
            db.EdgeServers.Add(new EdgeServer
            {
                Id = "edge-live", ExecutionProvider = "cuda", ComputeClass = "NVIDIA L4", MemoryBudgetBytes = 1 << 20, FirstSeenAt = now.AddHours(-1), LastSeenAt = now.AddSeconds(-1),
            });
            db.EdgeServers.Add(new EdgeServer { Id = "edge-stale", ExecutionProvider = "cpu", MemoryBudgetBytes = 1 << 20, FirstSeenAt = now.AddHours(-1), LastSeenAt = now.AddMinutes(-10) });

            // It beats every 10 s: 20 s after its last heartbeat it has missed one, not three.
            db.EdgeServers.Add(new EdgeServer
            {
                Id = "edge-slow", ExecutionProvider = "cpu", MemoryBudgetBytes = 1 << 20, FirstSeenAt = now.AddHours(-1), LastSeenAt = now.AddSeconds(-20), HeartbeatSeconds = 10,
            });
            await db.SaveChangesAsync();
        }

        var report = await ClusterStatus.ReadAsync(database.ConnectionString, virtualHost.Uri, TimeSpan.FromMinutes(10), 5, 5, Membership, clock, CancellationToken.None);

        var text = report.ToText().ToList();
        // The heading holds for edge-slow too: it is judged by its own 10 s, which its line says.
        Assert.Contains("edges (2 of 3 live; stale after 3 missed heartbeats of 2 s, or of the edge's own interval when longer):", text);
        Assert.Single(text, line => line.StartsWith("  edge-slow ", StringComparison.Ordinal) && line.Contains(" live ", StringComparison.Ordinal)
            && line.EndsWith("last heard 20 s ago, beats every 10 s", StringComparison.Ordinal));
        Assert.Single(text, line => line.StartsWith("  edge-live ", StringComparison.Ordinal) && line.Contains(" live ", StringComparison.Ordinal)
            && line.EndsWith(" cuda  (NVIDIA L4) last heard 1 s ago", StringComparison.Ordinal));
        Assert.Single(text, line => line.StartsWith("  edge-stale ", StringComparison.Ordinal) && line.Contains(" stale ", StringComparison.Ordinal)
            && line.EndsWith("last heard 10 min ago", StringComparison.Ordinal));

        var edges = Assert.IsType<List<Dictionary<string, object?>>>(report.ToJson()["edges"]);
        var live = Assert.Single(edges, e => (string?)e["id"] == "edge-live");
        var stale = Assert.Single(edges, e => (string?)e["id"] == "edge-stale");
        Assert.Equal("live", live["state"]);
        Assert.Equal(true, live["alive"]);
        Assert.Equal(1.0, live["seconds_since_seen"]);
        Assert.Equal("NVIDIA L4", live["compute_class"]);
        Assert.Equal("stale", stale["state"]);
        Assert.Equal(false, stale["alive"]);
        Assert.Equal(600.0, stale["seconds_since_seen"]);
        Assert.Equal(6.0, report.ToJson()["stale_after_seconds"]);
        var slow = Assert.Single(edges, e => (string?)e["id"] == "edge-slow");
        Assert.Equal(30.0, slow["stale_after_seconds"]);
        Assert.Equal(10.0, slow["heartbeat_seconds"]);
        Assert.Equal(6.0, live["stale_after_seconds"]);
    }

    [Fact]
    public async Task The_coordinator_runs_while_its_queue_has_a_consumer_and_not_once_it_is_gone()
    {
        await DatabaseMigrator.MigrateAsync(database.ConnectionString, TimeSpan.FromSeconds(10), CancellationToken.None);
        await using var connection = await RabbitMqOptions.Parse(virtualHost.Uri).ConnectionFactory().CreateConnectionAsync();
        var channel = await connection.CreateChannelAsync();
        await channel.QueueDeclareAsync(RunPlacementNowConsumerDefinition.Queue, durable: true, exclusive: false, autoDelete: false);
        await channel.BasicConsumeAsync(RunPlacementNowConsumerDefinition.Queue, autoAck: true, new AsyncEventingBasicConsumer(channel));

        var running = await ClusterStatus.ReadAsync(database.ConnectionString, virtualHost.Uri, TimeSpan.FromMinutes(10), 5, 5, Membership, TimeProvider.System, CancellationToken.None);
        await channel.CloseAsync();
        await channel.DisposeAsync();
        var stopped = await ClusterStatus.ReadAsync(database.ConnectionString, virtualHost.Uri, TimeSpan.FromMinutes(10), 5, 5, Membership, TimeProvider.System, CancellationToken.None);

        Assert.True(running.Coordinator!.Running);
        Assert.Equal("coordinator: running (1 consumer on queue 'coordinator')", running.ToText().First());
        Assert.Equal(true, ((Dictionary<string, object?>)running.ToJson()["coordinator"]!)["running"]);
        Assert.False(stopped.Coordinator!.Running);
        Assert.Equal("coordinator: not running (queue 'coordinator' has no consumer; ./dancemoe coordinator starts one)", stopped.ToText().First());
        Assert.Equal(false, ((Dictionary<string, object?>)stopped.ToJson()["coordinator"]!)["running"]);
    }
}
