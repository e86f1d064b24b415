using DanceMoE.Data;
using DanceMoE.Migrations;
using DanceMoE.Traces;
using Microsoft.EntityFrameworkCore.Infrastructure;
using Microsoft.EntityFrameworkCore.Migrations;
using Npgsql;

namespace DanceMoE.IntegrationTests.Traces;

public sealed class ExactlyOnceMigrationTests
{
    private const string LastMigrationWithoutTheKey = "20261130205528_MigrationSagas";
    private const string LastMigrationWithoutTheFingerprint = "20261206221031_EdgeHeartbeatInterval";

    [Fact]
    public Task Rows_stored_twice_before_the_unique_key_are_removed_and_uncounted_by_its_migration() => AtMigrationAsync(LastMigrationWithoutTheKey, async (connectionString, spill) =>
    {
        // Today's writer reads requests.fingerprint (a later migration's column): lent while it writes, gone before migrating.
        await ScalarAsync(connectionString, "ALTER TABLE requests ADD COLUMN fingerprint bytea; SELECT 0");

        const string edge = "edge-before-the-key";
        var today = Guid.NewGuid();
        var longAgo = Guid.NewGuid();
        var old = new DateTimeOffset(2001, 2, 3, 10, 0, 0, TimeSpan.Zero);
        foreach (var (at, again) in new[] { (DateTimeOffset.UtcNow.AddMinutes(-3), DateTimeOffset.UtcNow.AddSeconds(-5)), (old, old.AddMinutes(2)) })
        {
            var request = at == old ? longAgo : today;
            foreach (var servedAt in new[] { at, again })
            {
                await using var writer = new TraceWriter(Options(edge, connectionString, spill));
                writer.Start();
                TraceRecords.Request(edge, request, positions: 8, layers: 3, at: servedAt).ToList().ForEach(writer.Add);
                await writer.FlushAsync(CancellationToken.None);
            }
        }

        Assert.Equal(2 * 2 * 8 * 3, await ScalarAsync(connectionString, "SELECT count(*) FROM routing_events"));
        await ScalarAsync(connectionString, "ALTER TABLE requests DROP COLUMN fingerprint; SELECT 0");

        await DatabaseMigrator.MigrateAsync(connectionString, TimeSpan.FromSeconds(10), CancellationToken.None);

        Assert.Equal(8 * 3, await ScalarAsync(connectionString, $"SELECT count(*) FROM routing_events WHERE request_id = '{today}'"));
        Assert.Equal(8 * 3, await ScalarAsync(connectionString, $"SELECT count(*) FROM routing_events_default WHERE request_id = '{longAgo}'"));
        Assert.Equal(
            await ScalarAsync(connectionString, "SELECT sum(cardinality(experts)) FROM routing_events"),
            await ScalarAsync(connectionString, "SELECT sum(count) FROM activation_counts"));
        Assert.Equal(0, await ScalarAsync(connectionString, $"SELECT count(*) FROM routing_events WHERE request_id = '{today}' AND recorded_at > now() - interval '1 minute'"));
    });

    [Fact]
    public Task An_edge_newer_than_the_schema_says_to_migrate_keeps_its_rows_and_writes_them_once_migrated() => AtMigrationAsync(LastMigrationWithoutTheFingerprint, async (connectionString, spill) =>
    {
        const string edge = "edge-ahead-of-the-schema";
        var request = Guid.NewGuid();
        await using var writer = new TraceWriter(Options(edge, connectionString, spill));
        writer.Start();
        TraceRecords.Request(edge, request, positions: 4, layers: 2, at: DateTimeOffset.UtcNow.AddSeconds(-5)).ToList().ForEach(writer.Add);
        writer.Add(new RequestSummary
        {
            RequestId = request, PromptTokens = 3, Fingerprint = 7, GeneratedTokens = 4, Status = RequestStatus.Completed,
            ReceivedAt = DateTimeOffset.UtcNow.AddSeconds(-6), CompletedAt = DateTimeOffset.UtcNow.AddSeconds(-4),
        });

        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (writer.State.LastError is not { } error || !error.Contains("run `dancemoe db migrate`", StringComparison.Ordinal))
        {
            Assert.True(DateTime.UtcNow < deadline, $"the writer did not say to migrate: {writer.State.LastError}");
            await Task.Delay(50);
        }

        Assert.Contains("fingerprint", writer.State.LastError, StringComparison.Ordinal);
        Assert.Equal(0, writer.State.Lost);

        await DatabaseMigrator.MigrateAsync(connectionString, TimeSpan.FromSeconds(10), CancellationToken.None);
        using var flushed = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await writer.FlushAsync(flushed.Token);

        Assert.Equal(4 * 2, await ScalarAsync(connectionString, $"SELECT count(*) FROM routing_events WHERE request_id = '{request}'"));
        Assert.Equal(1, await ScalarAsync(connectionString, $"SELECT count(*) FROM requests WHERE id = '{request}' AND fingerprint IS NOT NULL"));
    });

    /// <summary>A database of its own at <paramref name="migration"/> and a spill directory, both removed afterwards.</summary>
    private static async Task AtMigrationAsync(string migration, Func<string, string, Task> test)
    {
        var database = new IsolatedDatabase();
        var spill = Path.Combine(Path.GetTempPath(), TestServices.UniqueName("spill"));
        await database.InitializeAsync();
        try
        {
            await using (var context = DanceMoEDbContext.Create(database.ConnectionString))
            {
                await context.GetService<IMigrator>().MigrateAsync(migration);
            }

            await test(database.ConnectionString, spill);
        }
        finally
        {
            await database.DisposeAsync();
            if (Directory.Exists(spill))
            {
                Directory.Delete(spill, recursive: true);
            }
        }
    }

    private static TraceWriterOptions Options(string edge, string connectionString, string spill) => new()
    {
        EdgeId = edge,
        ConnectionString = connectionString,
        SpillDirectory = spill,
        FlushInterval = TimeSpan.FromMilliseconds(20),
    };

    private static async Task<long> ScalarAsync(string connectionString, string sql)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        return Convert.ToInt64(await command.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture);
    }
}
