using System.Data;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace DanceMoE.Data;

/// <summary>Whether a database holds the tables <see cref="DanceMoEDbContext"/> maps, so a process can refuse to start on one that was never migrated.</summary>
public static class DatabaseSchema
{
    /// <summary>The mapped tables that <paramref name="db"/>'s database lacks, by name; none once <c>dancemoe db migrate</c> ran.</summary>
    public static async Task<IReadOnlyList<string>> MissingTablesAsync(DanceMoEDbContext db, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(db);
        var tables = db.Model.GetEntityTypes()
            .Select(e => e.GetTableName())
            .OfType<string>()
            .Distinct(StringComparer.Ordinal)
            .Order(StringComparer.Ordinal)
            .ToArray();
        var connection = (NpgsqlConnection)db.Database.GetDbConnection();
        var opened = connection.State != ConnectionState.Open;
        if (opened)
        {
            await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        }

        try
        {
            await using var command = new NpgsqlCommand("SELECT t FROM unnest(@tables) AS t WHERE to_regclass(quote_ident(t)) IS NULL ORDER BY t", connection);
            command.Parameters.AddWithValue("tables", tables);
            var missing = new List<string>();
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                missing.Add(reader.GetString(0));
            }

            return missing;
        }
        finally
        {
            if (opened)
            {
                await connection.CloseAsync().ConfigureAwait(false);
            }
        }
    }
}

/// <summary>The database answers but lacks the schema: <c>dancemoe db migrate</c> (in compose, the migrations service) has not run on it.</summary>
public sealed class DatabaseSchemaException(string message) : Exception(message);
