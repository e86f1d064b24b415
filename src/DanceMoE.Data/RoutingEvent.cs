namespace DanceMoE.Data;

/// <summary>
/// One routing decision: the experts one token position of one request used in one layer (table
/// <c>routing_events</c>, range-partitioned by day on <see cref="RecordedAt"/>; the partitioning is in the migration).
/// </summary>
public sealed class RoutingEvent
{
    public Guid RequestId { get; set; }

    public int Position { get; set; }

    public short Layer { get; set; }

    public required string OriginEdge { get; set; }

    public short[] Experts { get; set; } = [];

    public float[] GateWeights { get; set; } = [];

    /// <summary>Edge that executed each expert, in the order of <see cref="Experts"/>.</summary>
    public string[] ServedBy { get; set; } = [];

    public int PlacementVersion { get; set; }

    /// <summary>True when at least one expert ran on another edge than the origin.</summary>
    public bool Remote { get; set; }

    public DateTimeOffset RecordedAt { get; set; }
}
