using DanceMoE.Coordinator;
using DanceMoE.Migrations;
using DanceMoE.Operations;

namespace DanceMoE.IntegrationTests.Operations;

public sealed class ClusterStatusTests(IsolatedDatabase database, IsolatedVirtualHost virtualHost) : IClassFixture<IsolatedDatabase>, IClassFixture<IsolatedVirtualHost>
{
    private static readonly MembershipOptions Membership = new() { HeartbeatSeconds = 2, MissedHeartbeats = 3 };

    [Fact]
    public async Task An_empty_cluster_reads_as_no_edges_no_placement_and_no_routing()
    {
        await DatabaseMigrator.MigrateAsync(database.ConnectionString, TimeSpan.FromSeconds(10), CancellationToken.None);

        var report = await ClusterStatus.ReadAsync(database.ConnectionString, virtualHost.Uri, TimeSpan.FromMinutes(10), 5, 5, Membership, TimeProvider.System, CancellationToken.None);

        Assert.Equal(
            [
                "coordinator: not running (no queue 'coordinator' on the broker: none has run here; ./dancemoe coordinator starts one)",
                "edges (0 of 0 live; stale after 3 missed heartbeats of 2 s):",
                "active placement: none",
                "local ratio (last 10 min): no routing events",
                "migrations: 0 running, 0 completed, 0 failed",
                "placement decisions (latest 0; 0 waiting for the migration saga):",
            ],
            report.ToText());
        var json = report.ToJson();
        Assert.Equal(["at", "coordinator", "stale_after_seconds", "edges", "active_placement", "local_ratio", "pending_saga_decisions", "migrations", "decisions"], json.Keys);
        Assert.Null(json["active_placement"]);
    }

    [Fact]
    public async Task A_database_without_the_schema_fails_and_says_to_migrate()
    {
        var empty = new IsolatedDatabase();
        await empty.InitializeAsync();
        var error = await Assert.ThrowsAsync<OperationException>(() => ClusterStatus.ReadAsync(
            empty.ConnectionString, virtualHost.Uri, TimeSpan.FromMinutes(10), 5, 5, Membership, TimeProvider.System, CancellationToken.None));
        await empty.DisposeAsync();

        Assert.Equal(OperationFailure.Failed, error.Failure);
        Assert.EndsWith("apply the migrations with ./dancemoe db migrate", error.Message, StringComparison.Ordinal);
    }
}
