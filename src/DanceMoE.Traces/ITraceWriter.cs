namespace DanceMoE.Traces;

/// <summary>Where an edge hands the routing records and summaries of its requests; no call waits on PostgreSQL.</summary>
public interface ITraceWriter
{
    /// <summary>Buffers the record in memory; false when the memory buffer is full (nothing is stored then).</summary>
    /// <exception cref="InvalidTraceRecordException">The record is malformed or oversized.</exception>
    bool TryAdd(RoutingRecord record);

    /// <summary>
    /// Buffers the record in memory, or appends it to the spill file when the buffer is full. Should the spill file
    /// fail too (disk full), the record is counted in <see cref="TraceWriterState.Lost"/> and logged, not thrown.
    /// </summary>
    /// <exception cref="InvalidTraceRecordException">The record is malformed or oversized.</exception>
    void Add(RoutingRecord record);

    /// <summary>Buffers how a request ended (one <c>requests</c> row), spilling like <see cref="Add(RoutingRecord)"/>.</summary>
    /// <exception cref="InvalidTraceRecordException">The summary is malformed or oversized.</exception>
    void Add(RequestSummary summary);

    /// <summary>Makes what was added so far survive a killed process (pushed to the operating system); a no-op where nothing is kept.</summary>
    void Persist();

    TraceWriterState State { get; }
}

/// <summary>Tracing off: accepts everything and stores nothing (for runs that compare tokens/s with and without traces).</summary>
public sealed class NullTraceWriter(string edgeId) : ITraceWriter
{
    private long _rows;
    private long _requests;

    public TraceWriterState State => new() { EdgeId = edgeId, RowsAdded = Interlocked.Read(ref _rows), RequestsAdded = Interlocked.Read(ref _requests), DatabaseReachable = true };

    public bool TryAdd(RoutingRecord record)
    {
        Interlocked.Increment(ref _rows);
        return true;
    }

    public void Add(RoutingRecord record) => Interlocked.Increment(ref _rows);

    public void Add(RequestSummary summary) => Interlocked.Increment(ref _requests);

    public void Persist()
    {
    }
}
