using DanceMoE.Migrations;
using DanceMoE.Traces;
using Npgsql;

namespace DanceMoE.IntegrationTests.Traces;

/// <summary>A migrated database of its own for one test class, plus helpers to build writers and read rows back.</summary>
public sealed class TraceDatabase : IAsyncLifetime
{
    private readonly IsolatedDatabase _database = new();
    private readonly List<string> _directories = [];

    public string ConnectionString => _database.ConnectionString;

    public async Task InitializeAsync()
    {
        await _database.InitializeAsync();
        await DatabaseMigrator.MigrateAsync(_database.ConnectionString, TimeSpan.FromSeconds(10), CancellationToken.None);
    }

    public async Task DisposeAsync()
    {
        await _database.DisposeAsync();
        foreach (var directory in _directories.Where(Directory.Exists))
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    public string NewSpillDirectory()
    {
        var directory = Path.Combine(Path.GetTempPath(), TestServices.UniqueName("spill"));
        _directories.Add(directory);
        return directory;
    }

    public TraceWriterOptions Options(string edgeId, string? spillDirectory = null, string? connectionString = null) => new()
    {
        EdgeId = edgeId,
        ConnectionString = connectionString ?? ConnectionString,
        SpillDirectory = spillDirectory ?? NewSpillDirectory(),
        FlushInterval = TimeSpan.FromMilliseconds(20),
        RetryDelay = TimeSpan.FromMilliseconds(20),
        MaxRetryDelay = TimeSpan.FromMilliseconds(200),
        ConnectTimeout = TimeSpan.FromSeconds(2),
        ShutdownTimeout = TimeSpan.FromSeconds(5),
    };

    public async Task<long> ScalarAsync(string sql, params (string Name, object Value)[] parameters)
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        foreach (var (name, value) in parameters)
        {
            command.Parameters.AddWithValue(name, value);
        }

        return Convert.ToInt64(await command.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture);
    }

    public async Task ExecuteAsync(string sql)
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    public async Task<List<object[]>> RowsAsync(string sql, params (string Name, object Value)[] parameters)
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        foreach (var (name, value) in parameters)
        {
            command.Parameters.AddWithValue(name, value);
        }

        await using var reader = await command.ExecuteReaderAsync();
        var rows = new List<object[]>();
        while (await reader.ReadAsync())
        {
            var values = new object[reader.FieldCount];
            reader.GetValues(values);
            rows.Add(values);
        }

        return rows;
    }

    /// <summary>activation_counts minus the roll-up recomputed from routing_events, per key: empty when they agree.</summary>
    public Task<List<object[]>> RollUpDifferencesAsync(string edgeId) => RowsAsync("""
        WITH recomputed AS (
            SELECT date_trunc('minute', recorded_at, 'UTC') AS bucket, origin_edge, layer, e.expert, count(*) AS count
            FROM routing_events CROSS JOIN LATERAL unnest(experts) AS e(expert)
            WHERE origin_edge = @edge GROUP BY 1, 2, 3, 4)
        SELECT coalesce(a.bucket, r.bucket), coalesce(a.layer, r.layer), coalesce(a.expert, r.expert), a.count, r.count
        FROM (SELECT * FROM activation_counts WHERE origin_edge = @edge) a
        FULL JOIN recomputed r USING (bucket, origin_edge, layer, expert)
        WHERE a.count IS DISTINCT FROM r.count
        """, ("edge", edgeId));
}

/// <summary>Synthetic routing records with known contents.</summary>
public static class TraceRecords
{
    public static RoutingRecord Routing(string origin, Guid request, int position, int layer, int seed = 0, DateTimeOffset? at = null, string? remoteEdge = null)
    {
        var experts = new[] { (position + layer + seed) % 8, ((position + layer + seed) % 8) + 8 };
        return new RoutingRecord
        {
            RequestId = request,
            Position = position,
            Layer = layer,
            Experts = experts,
            GateWeights = [0.75f, 0.25f],
            ServedBy = [origin, (position % 2 == 0 ? remoteEdge : null) ?? origin],
            PlacementVersion = 1 + (position % 3 == 0 ? 1 : 0),
            RecordedAt = at ?? default,
        };
    }

    public static IEnumerable<RoutingRecord> Request(string origin, Guid request, int positions, int layers, DateTimeOffset? at = null, string? remoteEdge = null)
    {
        for (var p = 0; p < positions; p++)
        {
            for (var l = 0; l < layers; l++)
            {
                yield return Routing(origin, request, p, l, 0, at, remoteEdge);
            }
        }
    }
}
