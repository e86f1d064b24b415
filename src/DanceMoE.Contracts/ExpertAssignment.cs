namespace DanceMoE.Contracts;

/// <summary>The servers that hold one expert of one layer.</summary>
public record ExpertAssignment
{
    /// <summary>Zero-based MoE layer.</summary>
    public int Layer { get; init; }

    /// <summary>Zero-based expert index within the layer.</summary>
    public int Expert { get; init; }

    /// <summary>Edge ids that hold the expert.</summary>
    public IReadOnlyList<string> Servers { get; init; } = [];
}
