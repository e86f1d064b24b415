namespace DanceMoE.Contracts;

/// <summary>Event to all edges: route by this placement version from now on. Edges answer with <see cref="PlacementApplied"/>.</summary>
public record PlacementActivated
{
    /// <summary>Placement version.</summary>
    public int Version { get; init; }

    /// <summary>Every expert of every layer with the servers that hold it.</summary>
    public IReadOnlyList<ExpertAssignment> Assignments { get; init; } = [];

    /// <summary>When the coordinator activated it (UTC).</summary>
    public DateTimeOffset ActivatedAt { get; init; }
}
