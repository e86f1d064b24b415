using DanceMoE.Data;
using DanceMoE.Migrations;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace DanceMoE.IntegrationTests;

public sealed class MigrationTests(IsolatedDatabase database) : IClassFixture<IsolatedDatabase>
{
    [Fact]
    public async Task Migrations_apply_to_a_fresh_database_and_a_second_run_is_a_no_op()
    {
        var first = await DatabaseMigrator.MigrateAsync(database.ConnectionString, TimeSpan.FromSeconds(10), CancellationToken.None);
        var second = await DatabaseMigrator.MigrateAsync(database.ConnectionString, TimeSpan.FromSeconds(10), CancellationToken.None);

        await using var db = DanceMoEDbContext.Create(database.ConnectionString);
        var all = db.Database.GetMigrations().ToList();
        Assert.NotEmpty(all);
        Assert.Equal(all, first.Applied);
        Assert.Empty(second.Applied);
        Assert.Equal(all, second.AllApplied);
        Assert.Empty(await db.Database.GetPendingMigrationsAsync());

        var columns = await ColumnsAsync("edge_servers");
        Assert.Equal(
            ["id", "memory_budget_bytes", "memory_used_bytes", "compute_class", "execution_provider", "first_seen_at", "last_seen_at", "heartbeat_seconds"],
            columns);
        Assert.Contains(DanceMoEDbContext.MigrationsHistoryTable, await TablesAsync());
    }

    [Fact]
    public async Task Two_migrators_racing_on_the_same_database_both_succeed()
    {
        var other = new IsolatedDatabase();
        await other.InitializeAsync();
        try
        {
            var runs = await Task.WhenAll(
                DatabaseMigrator.MigrateAsync(other.ConnectionString, TimeSpan.FromSeconds(10), CancellationToken.None),
                DatabaseMigrator.MigrateAsync(other.ConnectionString, TimeSpan.FromSeconds(10), CancellationToken.None));

            Assert.All(runs, r => Assert.NotEmpty(r.AllApplied));
        }
        finally
        {
            await other.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_row_written_through_the_context_reads_back_with_its_timestamps()
    {
        await DatabaseMigrator.MigrateAsync(database.ConnectionString, TimeSpan.FromSeconds(10), CancellationToken.None);
        var seen = new DateTimeOffset(2026, 11, 25, 12, 0, 0, TimeSpan.Zero);
        await using (var db = DanceMoEDbContext.Create(database.ConnectionString))
        {
            db.EdgeServers.Add(new EdgeServer { Id = "edge-x", ExecutionProvider = "cpu", MemoryBudgetBytes = 1 << 30, FirstSeenAt = seen, LastSeenAt = seen });
            await db.SaveChangesAsync();
        }

        await using var read = DanceMoEDbContext.Create(database.ConnectionString);
        var row = await read.EdgeServers.SingleAsync(e => e.Id == "edge-x");
        Assert.Equal(1L << 30, row.MemoryBudgetBytes);
        Assert.Equal(seen, row.LastSeenAt);
    }

    private async Task<List<string>> ColumnsAsync(string table) =>
        await QueryStringsAsync($"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}' ORDER BY ordinal_position");

    private async Task<List<string>> TablesAsync() =>
        await QueryStringsAsync("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'");

    private async Task<List<string>> QueryStringsAsync(string sql)
    {
        await using var connection = new NpgsqlConnection(database.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await using var reader = await command.ExecuteReaderAsync();
        var values = new List<string>();
        while (await reader.ReadAsync())
        {
            values.Add(reader.GetString(0));
        }

        return values;
    }
}
