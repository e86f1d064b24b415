using Npgsql;

namespace DanceMoE.Traces;

/// <summary>Activations of one expert by one origin edge's tokens over a window: raw count and decayed weight.</summary>
public sealed record ExpertActivation(string OriginEdge, int Layer, int Expert, long Count, double Weight);

/// <summary>
/// Reads <c>activation_counts</c> for the placement job: per origin edge, layer and expert over a time window, each
/// one-minute bucket weighted by <c>0.5^(age / halfLife)</c> where age runs from the bucket's start to the window's end.
/// </summary>
public sealed class ActivationHistory(string connectionString)
{
    private const string Query = """
        SELECT origin_edge, layer, expert, sum(count)::bigint,
               sum(count * CASE WHEN @half_life_seconds IS NULL THEN 1.0
                                ELSE power(0.5, greatest(extract(epoch FROM @to - bucket), 0) / @half_life_seconds) END)::double precision
        FROM activation_counts
        WHERE bucket >= @from AND bucket < @to
        GROUP BY origin_edge, layer, expert
        ORDER BY origin_edge, layer, expert
        """;

    /// <param name="from">Window start (inclusive, bucket start).</param>
    /// <param name="to">Window end (exclusive); ages are measured from it.</param>
    /// <param name="halfLife">Age at which a bucket counts half; null for no decay.</param>
    /// <param name="cancellationToken">Cancels the query.</param>
    public async Task<IReadOnlyList<ExpertActivation>> ReadAsync(DateTimeOffset from, DateTimeOffset to, TimeSpan? halfLife, CancellationToken cancellationToken)
    {
        if (to <= from)
        {
            throw new ArgumentException($"window end {to:O} is not after its start {from:O}", nameof(to));
        }

        if (halfLife is { } h && h <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(halfLife), halfLife, "half-life must be positive (null for no decay)");
        }

        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(Query, connection);
        command.Parameters.AddWithValue("from", from.ToUniversalTime());
        command.Parameters.AddWithValue("to", to.ToUniversalTime());
        command.Parameters.Add(new NpgsqlParameter<double?>("half_life_seconds", NpgsqlTypes.NpgsqlDbType.Double) { TypedValue = halfLife?.TotalSeconds });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        var rows = new List<ExpertActivation>();
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            rows.Add(new ExpertActivation(reader.GetString(0), reader.GetInt16(1), reader.GetInt16(2), reader.GetInt64(3), reader.GetDouble(4)));
        }

        return rows;
    }

    /// <summary>
    /// The same window as a dense array <c>[edge][layer][expert]</c> of decayed weights, edges in the order given;
    /// activations of edges not listed are left out.
    /// </summary>
    public async Task<double[][][]> ReadDenseAsync(
        IReadOnlyList<string> edges, int layers, int experts, DateTimeOffset from, DateTimeOffset to, TimeSpan? halfLife, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(edges);
        var index = edges.Select((edge, i) => (edge, i)).ToDictionary(p => p.edge, p => p.i, StringComparer.Ordinal);
        var dense = edges.Select(_ => Enumerable.Range(0, layers).Select(_ => new double[experts]).ToArray()).ToArray();
        foreach (var row in await ReadAsync(from, to, halfLife, cancellationToken).ConfigureAwait(false))
        {
            if (index.TryGetValue(row.OriginEdge, out var n) && row.Layer < layers && row.Expert < experts)
            {
                dense[n][row.Layer][row.Expert] += row.Weight;
            }
        }

        return dense;
    }
}
