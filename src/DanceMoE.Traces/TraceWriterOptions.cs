using System.ComponentModel.DataAnnotations;

namespace DanceMoE.Traces;

/// <summary>Options of one edge's trace writer, bound from configuration section <c>Traces</c> and validated at start.</summary>
public sealed class TraceWriterOptions
{
    public const string SectionName = "Traces";

    /// <summary>The origin edge whose records this writer stores (<c>routing_events.origin_edge</c>).</summary>
    [Required]
    [StringLength(TraceLimits.MaxEdgeIdLength)]
    public string EdgeId { get; set; } = "";

    /// <summary>Npgsql connection string (<c>Host=...;Port=...</c>); hosts convert <c>postgresql://</c> URIs first.</summary>
    [Required]
    public string ConnectionString { get; set; } = "";

    /// <summary>Rows held in memory; past it, <c>Add</c> appends to the spill file and <c>TryAdd</c> returns false.</summary>
    [Range(1, 10_000_000)]
    public int BufferCapacity { get; set; } = 131_072;

    /// <summary>Most rows per COPY batch (one transaction).</summary>
    [Range(1, 1_000_000)]
    public int BatchSize { get; set; } = 16_384;

    /// <summary>How often the flusher writes what the buffer holds (it also wakes when a batch is full).</summary>
    [Range(typeof(TimeSpan), "00:00:00.001", "00:01:00")]
    public TimeSpan FlushInterval { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>Where the spill files (<c>EDGE.*.spill</c>) go; one writer per edge and directory at a time.</summary>
    [Required]
    public string SpillDirectory { get; set; } = Path.Combine(Path.GetTempPath(), "dancemoe-traces");

    /// <summary>First retry delay after PostgreSQL failed; doubles up to <see cref="MaxRetryDelay"/>.</summary>
    [Range(typeof(TimeSpan), "00:00:00.001", "00:10:00")]
    public TimeSpan RetryDelay { get; set; } = TimeSpan.FromMilliseconds(250);

    [Range(typeof(TimeSpan), "00:00:00.001", "00:10:00")]
    public TimeSpan MaxRetryDelay { get; set; } = TimeSpan.FromSeconds(5);

    [Range(typeof(TimeSpan), "00:00:01", "00:10:00")]
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Longest one batch may take before it counts as failed (a slow server is treated like a down one).</summary>
    [Range(typeof(TimeSpan), "00:00:01", "01:00:00")]
    public TimeSpan CommandTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Daily partitions of <c>routing_events</c> the writer keeps created ahead of today (UTC).</summary>
    [Range(1, 60)]
    public int PartitionDaysAhead { get; set; } = 3;

    /// <summary>How often the writer logs its state; zero turns it off.</summary>
    [Range(typeof(TimeSpan), "00:00:00", "1.00:00:00")]
    public TimeSpan StateLogInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How long disposal keeps trying to write before it spills the rest to disk.</summary>
    [Range(typeof(TimeSpan), "00:00:00", "00:10:00")]
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(10);

    [Range(1, TraceLimits.MaxSmallint + 1)]
    public int MaxLayers { get; set; } = 1024;

    /// <summary>Experts per layer: expert ids must be below it.</summary>
    [Range(1, TraceLimits.MaxSmallint + 1)]
    public int MaxExpertsPerLayer { get; set; } = 4096;

    /// <summary>Most experts in one record (top-k).</summary>
    [Range(1, TraceLimits.MaxExpertsPerRecord)]
    public int MaxExpertsPerRecord { get; set; } = 16;

    /// <summary>Token positions must be below it (prompt plus generated tokens).</summary>
    [Range(1, int.MaxValue)]
    public int MaxPosition { get; set; } = 1 << 20;

    /// <summary>Every problem with these options; empty when they are valid.</summary>
    public IReadOnlyList<string> Validate()
    {
        var results = new List<ValidationResult>();
        Validator.TryValidateObject(this, new ValidationContext(this), results, validateAllProperties: true);
        var errors = results.Select(r => r.ErrorMessage ?? string.Join(", ", r.MemberNames)).ToList();
        if (MaxRetryDelay < RetryDelay)
        {
            errors.Add($"Traces:MaxRetryDelay ({MaxRetryDelay}) is shorter than Traces:RetryDelay ({RetryDelay})");
        }

        if (BatchSize > BufferCapacity)
        {
            errors.Add($"Traces:BatchSize ({BatchSize}) is larger than Traces:BufferCapacity ({BufferCapacity})");
        }

        if (ConnectionString.StartsWith("postgres", StringComparison.OrdinalIgnoreCase) && ConnectionString.Contains("://", StringComparison.Ordinal))
        {
            errors.Add("Traces:ConnectionString is a URI: pass an Npgsql connection string (DatabaseOptions.ToNpgsql converts one)");
        }

        return errors;
    }

    public void ThrowIfInvalid()
    {
        var errors = Validate();
        if (errors.Count > 0)
        {
            throw new ArgumentException("Invalid trace writer options: " + string.Join("; ", errors));
        }
    }
}
