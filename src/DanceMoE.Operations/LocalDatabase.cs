using DanceMoE.Migrations;
using Npgsql;

namespace DanceMoE.Operations;

/// <summary>The schema of a PostgreSQL database, as the front ends need it before they start anything that writes.</summary>
public static class LocalDatabase
{
    /// <summary>Applies the EF Core migrations (safe to run twice), waiting up to <paramref name="wait"/> for the server.</summary>
    public static async Task<MigrationResult> MigrateAsync(string postgresUrl, TimeSpan wait, CancellationToken cancellationToken)
    {
        try
        {
            return await DatabaseMigrator.MigrateAsync(postgresUrl, wait, cancellationToken).ConfigureAwait(false);
        }
        catch (NpgsqlException ex)
        {
            throw OperationException.ServiceFailure($"cannot migrate the database at {LocalEnvironment.Redact(postgresUrl)}", ex);
        }
        catch (FormatException ex)
        {
            throw new OperationException(ex.Message, OperationFailure.InvalidSettings, ex);
        }
    }
}
