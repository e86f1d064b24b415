using DanceMoE.Data;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace DanceMoE.Migrations;

/// <summary>
/// Applies the EF Core migrations. The one process that does it (<c>dancemoe db migrate</c>, the compose
/// <c>migrations</c> service) waits for PostgreSQL to accept connections first. A session advisory lock held for
/// the whole run makes two concurrent runs safe: the Npgsql provider's own lock is released at every migration's
/// commit, so with several pending migrations a second migrator could re-apply one the first just applied.
/// </summary>
public static class DatabaseMigrator
{
    /// <summary>Advisory lock key ("DanceMoE" in ASCII); advisory locks are per database.</summary>
    private const long LockKey = 0x44616E63654D6F45;

    public static async Task<MigrationResult> MigrateAsync(string connectionString, TimeSpan waitForServer, CancellationToken cancellationToken)
    {
        await WaitForServerAsync(connectionString, waitForServer, cancellationToken).ConfigureAwait(false);
        await using var lockConnection = new NpgsqlConnection(DatabaseOptions.ToNpgsql(connectionString));
        await lockConnection.OpenAsync(cancellationToken).ConfigureAwait(false);
        await ExecuteAsync(lockConnection, "SELECT pg_advisory_lock(@key)", cancellationToken).ConfigureAwait(false);
        try
        {
            await using var db = DanceMoEDbContext.Create(connectionString);
            var pending = (await db.Database.GetPendingMigrationsAsync(cancellationToken).ConfigureAwait(false)).ToList();
            await db.Database.MigrateAsync(cancellationToken).ConfigureAwait(false);
            var applied = (await db.Database.GetAppliedMigrationsAsync(cancellationToken).ConfigureAwait(false)).ToList();
            return new MigrationResult(pending, applied);
        }
        finally
        {
            await ExecuteAsync(lockConnection, "SELECT pg_advisory_unlock(@key)", CancellationToken.None).ConfigureAwait(false);
        }
    }

    private static async Task ExecuteAsync(NpgsqlConnection connection, string sql, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(sql, connection) { CommandTimeout = 0 };
        command.Parameters.AddWithValue("key", LockKey);
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    private static async Task WaitForServerAsync(string connectionString, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            try
            {
                await using var connection = new NpgsqlConnection(DatabaseOptions.ToNpgsql(connectionString));
                await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
                return;
            }
            catch (NpgsqlException ex) when (DateTime.UtcNow < deadline && ex.IsTransient)
            {
                await Task.Delay(TimeSpan.FromSeconds(1), cancellationToken).ConfigureAwait(false);
            }
        }
    }
}

/// <summary>What a migration run did: the migrations it applied and all that are applied now.</summary>
public sealed record MigrationResult(IReadOnlyList<string> Applied, IReadOnlyList<string> AllApplied);
