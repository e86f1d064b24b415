namespace DanceMoE.Data;

/// <summary>An edge server as the cluster last saw it (table <c>edge_servers</c>).</summary>
public sealed class EdgeServer
{
    /// <summary>Edge id, for example <c>edge-1</c>.</summary>
    public required string Id { get; set; }

    public long MemoryBudgetBytes { get; set; }

    public long MemoryUsedBytes { get; set; }

    public string? ComputeClass { get; set; }

    /// <summary>ONNX Runtime execution provider: <c>cpu</c> or <c>cuda</c>.</summary>
    public required string ExecutionProvider { get; set; }

    public DateTimeOffset FirstSeenAt { get; set; }

    public DateTimeOffset LastSeenAt { get; set; }

    /// <summary>How often the edge said it sends heartbeats, in seconds; 0 when it did not say.</summary>
    public double HeartbeatSeconds { get; set; }
}
