namespace DanceMoE.Contracts;

/// <summary>Event: an edge routes by a placement version now.</summary>
public record PlacementApplied
{
    /// <summary>The edge that answered.</summary>
    public required string EdgeId { get; init; }

    /// <summary>Placement version.</summary>
    public int Version { get; init; }
}
