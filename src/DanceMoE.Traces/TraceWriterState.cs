namespace DanceMoE.Traces;

/// <summary>A snapshot of one trace writer, for heartbeats and logs.</summary>
public sealed record TraceWriterState
{
    public required string EdgeId { get; init; }

    /// <summary>Routing records accepted by <c>Add</c>/<c>TryAdd</c> since start.</summary>
    public long RowsAdded { get; init; }

    /// <summary>Routing rows this writer inserted into <c>routing_events</c>.</summary>
    public long RowsWritten { get; init; }

    /// <summary>Rows it sent that were already stored: replays after a crash or a lost commit acknowledgement, a request served again under its id.</summary>
    public long RowsDuplicate { get; init; }

    /// <summary>
    /// Request summaries not stored because their id is stored for another request (another prompt length or workload
    /// tag, from this edge or another): that request's summary and routing rows are missing from the history.
    /// </summary>
    public long RequestIdConflicts { get; init; }

    public long RequestsAdded { get; init; }

    public long RequestsWritten { get; init; }

    /// <summary>Rows and summaries in memory or in the batch being written.</summary>
    public long Pending { get; init; }

    /// <summary>Rows and summaries in spill files now, waiting for replay.</summary>
    public long Spilled { get; init; }

    /// <summary>Rows and summaries that ever went to a spill file.</summary>
    public long SpilledTotal { get; init; }

    /// <summary>Records refused at <c>Add</c> as malformed or oversized.</summary>
    public long Rejected { get; init; }

    /// <summary>Rows PostgreSQL refused as data errors, set aside in <c>*.rejected</c> files next to the spill files.</summary>
    public long Quarantined { get; init; }

    /// <summary>Rows that could go neither to memory nor to the spill file (the disk failed); zero unless something is badly wrong.</summary>
    public long Lost { get; init; }

    public long Batches { get; init; }

    public long FlushFailures { get; init; }

    /// <summary>False from a failed batch until the next one succeeds.</summary>
    public bool DatabaseReachable { get; init; }

    /// <summary>Age of the oldest row not yet in PostgreSQL; zero when nothing waits.</summary>
    public TimeSpan Lag { get; init; }

    public DateTimeOffset? LastFlushAt { get; init; }

    public string? LastError { get; init; }
}
