using Npgsql;

namespace DanceMoE.Traces;

/// <summary>Retention of <c>routing_events</c>, for the coordinator's scheduled job.</summary>
public sealed class TraceRetentionOptions
{
    public const string SectionName = "Traces:Retention";

    /// <summary>Days of routing events kept; older daily partitions are dropped. <c>activation_counts</c> is kept.</summary>
    [System.ComponentModel.DataAnnotations.Range(typeof(TimeSpan), "1.00:00:00", "3650.00:00:00")]
    public TimeSpan KeepRoutingEvents { get; set; } = TimeSpan.FromDays(14);

    /// <summary>Daily partitions created ahead of today.</summary>
    [System.ComponentModel.DataAnnotations.Range(1, 60)]
    public int DaysAhead { get; set; } = 7;
}

/// <summary>Creates and drops the daily partitions of <c>routing_events</c> through the SQL functions of the schema.</summary>
public static class RoutingPartitions
{
    /// <summary>Creates the missing partitions for <paramref name="days"/> days from <paramref name="firstDay"/> (UTC); returns their names.</summary>
    public static Task<IReadOnlyList<string>> EnsureAsync(string connectionString, DateOnly firstDay, int days, CancellationToken cancellationToken) =>
        NamesAsync(connectionString, "SELECT * FROM dancemoe_create_routing_partitions(@day, @days)", p =>
        {
            p.AddWithValue("day", firstDay);
            p.AddWithValue("days", days);
        }, cancellationToken);

    /// <summary>Drops the partitions whose whole day is older than now minus <paramref name="keep"/>; returns their names.</summary>
    public static Task<IReadOnlyList<string>> DropOlderThanAsync(string connectionString, TimeSpan keep, CancellationToken cancellationToken) =>
        NamesAsync(connectionString, "SELECT * FROM dancemoe_drop_old_routing_partitions(@keep)", p => p.AddWithValue("keep", keep), cancellationToken);

    /// <summary>The daily partitions that exist, oldest first.</summary>
    public static Task<IReadOnlyList<string>> ListAsync(string connectionString, CancellationToken cancellationToken) =>
        NamesAsync(connectionString, """
            SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'routing_events'::regclass AND c.relname ~ '^routing_events_p[0-9]{8}$' ORDER BY 1
            """, _ => { }, cancellationToken);

    private static async Task<IReadOnlyList<string>> NamesAsync(
        string connectionString, string sql, Action<NpgsqlParameterCollection> parameters, CancellationToken cancellationToken)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(sql, connection);
        parameters(command.Parameters);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        var names = new List<string>();
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            names.Add(reader.GetString(0));
        }

        return names;
    }
}
