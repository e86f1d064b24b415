using Microsoft.Extensions.Logging;

namespace DanceMoE.Traces;

internal static class TraceLog
{
    public static readonly Action<ILogger, string, int, int, double, string, Exception?> Started = LoggerMessage.Define<string, int, int, double, string>(
        LogLevel.Information, new EventId(1, "TraceWriterStarted"),
        "Trace writer for {EdgeId} started: buffer {BufferCapacity} rows, batches of {BatchSize}, every {FlushMs} ms, spill directory {SpillDirectory}");

    public static readonly Action<ILogger, string, long, string, Exception?> SpillFound = LoggerMessage.Define<string, long, string>(
        LogLevel.Information, new EventId(2, "TraceSpillFound"),
        "Trace writer for {EdgeId} found {Rows} spilled rows in {SpillDirectory}; they will be replayed");

    public static readonly Action<ILogger, string, string, Exception?> Unreachable = LoggerMessage.Define<string, string>(
        LogLevel.Warning, new EventId(3, "TraceDatabaseUnreachable"),
        "Trace writer for {EdgeId} cannot write to PostgreSQL ({Error}); buffering, then spilling, until it can");

    public static readonly Action<ILogger, string, long, Exception?> Recovered = LoggerMessage.Define<string, long>(
        LogLevel.Information, new EventId(4, "TraceDatabaseRecovered"),
        "Trace writer for {EdgeId} writes to PostgreSQL again; {Spilled} spilled rows to replay");

    public static readonly Action<ILogger, string, long, Exception?> PartitionsCreated = LoggerMessage.Define<string, long>(
        LogLevel.Information, new EventId(5, "TracePartitionsCreated"),
        "Trace writer for {EdgeId} created {Count} daily partitions of routing_events");

    public static readonly Action<ILogger, string, string, Exception?> PartitionsFailed = LoggerMessage.Define<string, string>(
        LogLevel.Warning, new EventId(6, "TracePartitionsFailed"),
        "Trace writer for {EdgeId} could not create routing_events partitions ({Error}); rows go to routing_events_default");

    public static readonly Action<ILogger, string, int, string, string, Exception?> Quarantined = LoggerMessage.Define<string, int, string, string>(
        LogLevel.Error, new EventId(7, "TraceBatchQuarantined"),
        "Trace writer for {EdgeId}: PostgreSQL refused a batch of {Rows} rows as data; set aside in {Path}: {Error}");

    public static readonly Action<ILogger, string, string, string, Exception?> SpillCorrupt = LoggerMessage.Define<string, string, string>(
        LogLevel.Error, new EventId(8, "TraceSpillCorrupt"),
        "Trace writer for {EdgeId}: spill file {Path} is damaged ({Error}); rows after the damage are kept aside in it");

    public static readonly Action<ILogger, string, long, long, long, double, long, Exception?> State = LoggerMessage.Define<string, long, long, long, double, long>(
        LogLevel.Information, new EventId(9, "TraceWriterState"),
        "Traces {EdgeId}: written {RowsWritten}, pending {Pending}, spilled {Spilled}, lag {LagMs} ms, failed batches {Failures}");

    public static readonly Action<ILogger, string, long, string, Exception?> Lost = LoggerMessage.Define<string, long, string>(
        LogLevel.Error, new EventId(11, "TraceRowsLost"),
        "Trace writer for {EdgeId} lost {Lost} rows so far: memory full and the spill file failed ({Error})");

    public static readonly Action<ILogger, string, Guid, string, string, string, Exception?> RequestIdConflict = LoggerMessage.Define<string, Guid, string, string, string>(
        LogLevel.Warning, new EventId(12, "TraceRequestIdConflict"),
        "Trace writer for {EdgeId}: request id {RequestId} is stored for another request ({Stored}, from {StoredBy}); this one ({Summary}) and its routing rows are not stored: a request id must name one request");

    public static readonly Action<ILogger, string, long, long, Exception?> Stopped = LoggerMessage.Define<string, long, long>(
        LogLevel.Information, new EventId(10, "TraceWriterStopped"),
        "Trace writer for {EdgeId} stopped: {RowsWritten} rows written, {Spilled} rows left in spill files for the next start");
}
