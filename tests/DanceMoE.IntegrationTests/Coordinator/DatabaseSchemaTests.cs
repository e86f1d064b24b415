using DanceMoE.Coordinator;
using DanceMoE.Coordinator.Saga;
using DanceMoE.Data;
using DanceMoE.Migrations;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;

namespace DanceMoE.IntegrationTests.Coordinator;

/// <summary>A coordinator against a database without the schema, or without a database at all.</summary>
public sealed class DatabaseSchemaTests(IsolatedDatabase database) : IClassFixture<IsolatedDatabase>
{
    [Fact]
    public async Task A_coordinator_on_a_database_never_migrated_stops_at_start_naming_the_missing_tables_and_the_fix()
    {
        var fresh = new IsolatedDatabase();
        await fresh.InitializeAsync();
        try
        {
            await RefusedThenAcceptedAsync(fresh);
        }
        finally
        {
            await fresh.DisposeAsync();
        }
    }

    private static async Task RefusedThenAcceptedAsync(IsolatedDatabase database)
    {
        using var host = CoordinatorHost.Build(new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ConnectionStrings:postgres"] = database.ConnectionString,
            ["PlacementJob:Cron"] = "0 0 0 1 1 ? 2099",
            ["PlacementJob:Layers"] = "2",
            ["PlacementJob:Experts"] = "4",
            ["PlacementJob:TopK"] = "2",
            ["PlacementJob:ExpertBytes"] = "1000",
        }).Build());

        var refused = await Assert.ThrowsAsync<DatabaseSchemaException>(() => host.StartAsync());

        Assert.Contains($"database '{database.Name}'", refused.Message, StringComparison.Ordinal);
        Assert.Contains("has no table activation_counts, edge_servers, migrations, placement_assignments", refused.Message, StringComparison.Ordinal);
        Assert.Contains("./dancemoe db migrate", refused.Message, StringComparison.Ordinal);

        await DatabaseMigrator.MigrateAsync(database.ConnectionString, TimeSpan.FromSeconds(10), CancellationToken.None);
        await using var db = DanceMoEDbContext.Create(database.ConnectionString);
        Assert.Empty(await DatabaseSchema.MissingTablesAsync(db, CancellationToken.None));
        var check = new DatabaseSchemaCheck(new Factory(database.ConnectionString), new FakeLogger<DatabaseSchemaCheck>());
        await check.StartAsync(CancellationToken.None);
    }

    [Fact]
    public async Task The_timeout_scan_logs_an_unreachable_database_once_and_once_more_when_it_answers_again()
    {
        await DatabaseMigrator.MigrateAsync(database.ConnectionString, TimeSpan.FromSeconds(10), CancellationToken.None);
        var factory = new Factory("postgresql://dancemoe:dancemoe@127.0.0.1:1/nowhere");
        var logger = new FakeLogger<MigrationTimeoutJob>();
        var outage = new OutageLog<MigrationTimeoutJob>(logger);

        // No migration is late in a fresh database, so the job publishes nothing and needs no bus.
        async Task ScanAsync() => await new MigrationTimeoutJob(factory, null!, TimeProvider.System, outage).Execute(null!, CancellationToken.None);

        for (var i = 0; i < 5; i++)
        {
            await ScanAsync();
        }

        var down = Assert.Single(logger.Collector.GetSnapshot());
        Assert.Equal(LogLevel.Warning, down.Level);
        Assert.Contains("the scan for migration steps past their deadline failed", down.Message, StringComparison.Ordinal);

        factory.ConnectionString = database.ConnectionString;
        await ScanAsync();
        await ScanAsync();

        var logs = logger.Collector.GetSnapshot();
        Assert.Equal(2, logs.Count);
        Assert.Equal(LogLevel.Information, logs[1].Level);
        Assert.Contains("works again after 5 failures", logs[1].Message, StringComparison.Ordinal);
    }

    private sealed class Factory(string connectionString) : IDbContextFactory<DanceMoEDbContext>
    {
        public string ConnectionString { get; set; } = connectionString;

        public DanceMoEDbContext CreateDbContext() => DanceMoEDbContext.Create(ConnectionString);
    }
}
