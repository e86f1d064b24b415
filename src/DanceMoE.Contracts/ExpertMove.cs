namespace DanceMoE.Contracts;

/// <summary>One step of a migration: load a replica of an expert onto an edge, or drop one.</summary>
public record ExpertMove
{
    /// <summary><c>load</c> or <c>unload</c>.</summary>
    public required string Action { get; init; }

    /// <summary>The edge that loads or unloads.</summary>
    public required string EdgeId { get; init; }

    /// <summary>Zero-based MoE layer.</summary>
    public int Layer { get; init; }

    /// <summary>Zero-based expert index within the layer.</summary>
    public int Expert { get; init; }
}
