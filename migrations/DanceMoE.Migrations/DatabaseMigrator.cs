using DanceMoE.Data;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace DanceMoE.Migrations;

/// <summary>
/// Applies the EF Core migrations. The one process that does it (<c>dancemoe db migrate</c>, the compose
/// <c>migrations</c> service) waits for PostgreSQL to accept connections first; EF Core's migration lock
/// makes two concurrent runs safe, and a second run finds nothing pending.
/// </summary>
public static class DatabaseMigrator
{
    public static async Task<MigrationResult> MigrateAsync(string connectionString, TimeSpan waitForServer, CancellationToken cancellationToken)
    {
        await WaitForServerAsync(connectionString, waitForServer, cancellationToken).ConfigureAwait(false);
        await using var db = DanceMoEDbContext.Create(connectionString);
        var pending = (await db.Database.GetPendingMigrationsAsync(cancellationToken).ConfigureAwait(false)).ToList();
        await db.Database.MigrateAsync(cancellationToken).ConfigureAwait(false);
        var applied = (await db.Database.GetAppliedMigrationsAsync(cancellationToken).ConfigureAwait(false)).ToList();
        return new MigrationResult(pending, applied);
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
