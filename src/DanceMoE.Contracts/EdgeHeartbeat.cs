namespace DanceMoE.Contracts;

/// <summary>Event: an edge server is alive, with what it holds and how busy it is. Published every few seconds.</summary>
public record EdgeHeartbeat
{
    /// <summary>Edge server id, for example <c>edge-1</c>.</summary>
    public required string EdgeId { get; init; }

    /// <summary>Memory the edge may spend on experts, in bytes.</summary>
    public long MemoryBudgetBytes { get; init; }

    /// <summary>Memory its loaded experts take now, in bytes.</summary>
    public long MemoryUsedBytes { get; init; }

    /// <summary>Experts loaded on the edge, as <c>layer:expert</c> keys.</summary>
    public IReadOnlyList<string> LoadedExperts { get; init; } = [];

    /// <summary>Messages waiting in the edge's request and expert queues.</summary>
    public int QueueDepth { get; init; }

    /// <summary>Measured median time of one expert call on this edge, in milliseconds.</summary>
    public double ExpertMilliseconds { get; init; }

    /// <summary>ONNX Runtime execution provider in use: <c>cpu</c> or <c>cuda</c>.</summary>
    public string ExecutionProvider { get; init; } = "cpu";

    /// <summary>Relative compute class of the edge (free text, for example a GPU name).</summary>
    public string? ComputeClass { get; init; }

    /// <summary>The placement version the edge routes by.</summary>
    public int PlacementVersion { get; init; }

    /// <summary>Routing rows the edge's trace writer has written to PostgreSQL since it started.</summary>
    public long TraceRowsWritten { get; init; }

    /// <summary>Routing rows waiting in the trace writer's memory buffer.</summary>
    public long TraceRowsPending { get; init; }

    /// <summary>Routing rows waiting in spill files while PostgreSQL is unreachable.</summary>
    public long TraceRowsSpilled { get; init; }

    /// <summary>Age of the oldest row not yet written, in milliseconds.</summary>
    public double TraceLagMs { get; init; }

    /// <summary>How often the edge sends heartbeats, in seconds; 0 from an edge that does not say.</summary>
    public double HeartbeatSeconds { get; init; }

    /// <summary>When the edge sent it (UTC).</summary>
    public DateTimeOffset SentAt { get; init; }
}
