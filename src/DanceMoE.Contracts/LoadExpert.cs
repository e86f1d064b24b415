namespace DanceMoE.Contracts;

/// <summary>Command to an edge's <c>edge-{id}-control</c> queue: load an expert into memory. Answered with <see cref="ExpertLoaded"/> or a fault.</summary>
public record LoadExpert
{
    /// <summary>Id of this command, echoed in its answer.</summary>
    public Guid CommandId { get; init; }

    /// <summary>Zero-based MoE layer.</summary>
    public int Layer { get; init; }

    /// <summary>Zero-based expert index within the layer.</summary>
    public int Expert { get; init; }
}
