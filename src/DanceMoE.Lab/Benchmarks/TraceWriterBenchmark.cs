using System.Diagnostics;
using DanceMoE.Traces;
using Npgsql;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>Shape of the synthetic routing records the benchmark writes (defaults: DeepSeek-V2-Lite, 4 edges).</summary>
public sealed record TraceWriterBenchmarkOptions
{
    public int Layers { get; init; } = 26;

    public int Experts { get; init; } = 64;

    public int TopK { get; init; } = 6;

    public int Edges { get; init; } = 4;

    public int BufferCapacity { get; init; } = 131_072;

    public int BatchSize { get; init; } = 16_384;

    public TimeSpan FlushInterval { get; init; } = TimeSpan.FromMilliseconds(200);

    /// <summary>Where the benchmark's writer spills; a fresh temporary folder when null.</summary>
    public string? SpillDirectory { get; init; }

    /// <summary>Leave the benchmark's rows in the database (they are deleted by default, so the placement job never sees them).</summary>
    public bool KeepRows { get; init; }

    public int Seed { get; init; } = 1;
}

/// <summary>What one benchmark run measured.</summary>
public sealed record TraceWriterBenchmarkResult
{
    public required string EdgeId { get; init; }

    public required long Rows { get; init; }

    /// <summary>From the first add to the last row committed.</summary>
    public required TimeSpan Elapsed { get; init; }

    /// <summary>Sustained rows per second into PostgreSQL through the writer.</summary>
    public double RowsPerSecond => Rows / Math.Max(Elapsed.TotalSeconds, 1e-9);

    /// <summary>Mean time the caller spent in one <c>TryAdd</c> (what the token loop pays), in nanoseconds.</summary>
    public required double AddNanoseconds { get; init; }

    /// <summary>Times the producer found the buffer full and waited (the writer was the bottleneck).</summary>
    public required long BufferFullWaits { get; init; }

    public required long Batches { get; init; }

    public required long RowsInDatabase { get; init; }

    /// <summary>Sum of <c>activation_counts</c> the run added: should be rows x top-k.</summary>
    public required long Activations { get; init; }

    public required TraceWriterBenchmarkOptions Options { get; init; }
}

/// <summary>The writer half of <c>dancemoe bench traces</c>: sustained rows/s of synthetic routing records through <see cref="TraceWriter"/>.</summary>
public static class TraceWriterBenchmark
{
    /// <param name="connectionString">Npgsql connection string of a migrated database.</param>
    /// <param name="rows">Routing records to write.</param>
    /// <param name="options">Shape of the records and of the writer; defaults when null.</param>
    /// <param name="cancellationToken">Stops the run.</param>
    public static async Task<TraceWriterBenchmarkResult> RunAsync(string connectionString, int rows, TraceWriterBenchmarkOptions? options, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        options ??= new TraceWriterBenchmarkOptions();
        var edgeId = $"bench-{Guid.NewGuid():N}"[..14];
        var spillDirectory = options.SpillDirectory ?? Path.Combine(Path.GetTempPath(), edgeId);
        var writerOptions = new TraceWriterOptions
        {
            EdgeId = edgeId,
            ConnectionString = connectionString,
            BufferCapacity = options.BufferCapacity,
            BatchSize = options.BatchSize,
            FlushInterval = options.FlushInterval,
            SpillDirectory = spillDirectory,
            MaxExpertsPerLayer = Math.Max(options.Experts, 1),
            MaxLayers = Math.Max(options.Layers, 1),
            StateLogInterval = TimeSpan.Zero,
        };
        var records = Synthesize(edgeId, options, Math.Min(rows, 1 << 14));

        var writer = new TraceWriter(writerOptions);
        long addTicks = 0, waits = 0;
        Stopwatch elapsed;
        try
        {
            writer.Start();
            var requestId = Guid.NewGuid();
            var position = 0;
            var layer = 0;
            elapsed = Stopwatch.StartNew();
            for (var i = 0; i < rows; i++)
            {
                var template = records[i % records.Length];
                var record = template with { RequestId = requestId, Position = position, Layer = layer };
                while (true)
                {
                    var before = Stopwatch.GetTimestamp();
                    var added = writer.TryAdd(record);
                    addTicks += Stopwatch.GetTimestamp() - before;
                    if (added)
                    {
                        break;
                    }

                    waits++;
                    await Task.Delay(1, cancellationToken).ConfigureAwait(false);
                }

                if (++layer == options.Layers)
                {
                    layer = 0;
                    if (++position == 512)
                    {
                        position = 0;
                        requestId = Guid.NewGuid();
                    }
                }
            }

            await writer.FlushAsync(cancellationToken).ConfigureAwait(false);
            elapsed.Stop();
        }
        finally
        {
            await writer.DisposeAsync().ConfigureAwait(false);
        }

        var state = writer.State;
        var (inDatabase, activations) = await CountAndCleanAsync(connectionString, edgeId, options.KeepRows, cancellationToken).ConfigureAwait(false);
        if (options.SpillDirectory is null)
        {
            Directory.Delete(spillDirectory, recursive: true);
        }

        return new TraceWriterBenchmarkResult
        {
            EdgeId = edgeId,
            Rows = rows,
            Elapsed = elapsed.Elapsed,
            AddNanoseconds = addTicks * (1e9 / Stopwatch.Frequency) / (rows + waits),
            BufferFullWaits = waits,
            Batches = state.Batches,
            RowsInDatabase = inDatabase,
            Activations = activations,
            Options = options,
        };
    }

    private static RoutingRecord[] Synthesize(string edgeId, TraceWriterBenchmarkOptions options, int count)
    {
        var random = new Random(options.Seed);
        var edges = Enumerable.Range(0, options.Edges).Select(i => i == 0 ? edgeId : $"edge-{i}").ToArray();
        var records = new RoutingRecord[count];
        var now = DateTimeOffset.UtcNow;
        for (var i = 0; i < count; i++)
        {
            var experts = Enumerable.Range(0, options.Experts).OrderBy(_ => random.Next()).Take(options.TopK).ToArray();
            var weights = experts.Select(_ => (float)random.NextDouble()).ToArray();
            var servedBy = experts.Select(e => edges[e % edges.Length]).ToArray();
            records[i] = new RoutingRecord
            {
                RequestId = Guid.Empty,
                Position = 0,
                Layer = 0,
                Experts = experts,
                GateWeights = weights,
                ServedBy = servedBy,
                PlacementVersion = 1,
                RecordedAt = now.AddTicks(i * 10),
            };
        }

        return records;
    }

    private static async Task<(long Rows, long Activations)> CountAndCleanAsync(string connectionString, string edgeId, bool keep, CancellationToken cancellationToken)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var count = new NpgsqlCommand(
            "SELECT (SELECT count(*) FROM routing_events WHERE origin_edge = @edge), (SELECT coalesce(sum(count), 0)::bigint FROM activation_counts WHERE origin_edge = @edge)",
            connection);
        count.Parameters.AddWithValue("edge", edgeId);
        long rows, activations;
        await using (var reader = await count.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false))
        {
            await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            rows = reader.GetInt64(0);
            activations = reader.GetInt64(1);
        }

        if (!keep)
        {
            await using var clean = new NpgsqlCommand(
                "DELETE FROM routing_events WHERE origin_edge = @edge; DELETE FROM activation_counts WHERE origin_edge = @edge;", connection)
            {
                CommandTimeout = 600,
            };
            clean.Parameters.AddWithValue("edge", edgeId);
            await clean.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        return (rows, activations);
    }
}
