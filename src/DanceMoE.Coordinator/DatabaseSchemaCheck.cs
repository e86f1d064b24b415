using DanceMoE.Data;
using DanceMoE.Hosting;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace DanceMoE.Coordinator;

/// <summary>
/// Refuses to start on a database without the schema (every job and the saga would fail on it twice a second, while the
/// coordinator looked as if it served), or one that refuses its login. A database that does not answer is only a warning:
/// the coordinator rides out PostgreSQL being down, at start as later.
/// </summary>
public sealed class DatabaseSchemaCheck(IDbContextFactory<DanceMoEDbContext> dbFactory, ILogger<DatabaseSchemaCheck> logger) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await using var db = await dbFactory.CreateDbContextAsync(cancellationToken).ConfigureAwait(false);
        var where = Describe(db);
        IReadOnlyList<string> missing;
        try
        {
            missing = await DatabaseSchema.MissingTablesAsync(db, cancellationToken).ConfigureAwait(false);
        }
        catch (NpgsqlException ex) when (ServiceRefusal.Describe(ex) is null)
        {
            logger.LogWarning("cannot check the schema of {Database}: {Reason}; starting anyway", where, ex.Message);
            return;
        }

        if (missing.Count > 0)
        {
            throw new DatabaseSchemaException(
                $"{where} has no table {string.Join(", ", missing)}: apply the schema first (./dancemoe db migrate; in compose, the migrations service)");
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    private static string Describe(DanceMoEDbContext db)
    {
        var builder = new NpgsqlConnectionStringBuilder(db.Database.GetConnectionString());
        return $"PostgreSQL database '{builder.Database}' on {builder.Host}:{builder.Port}";
    }
}
