namespace DanceMoE.Contracts;

/// <summary>Command to an edge's <c>edge-{id}-control</c> queue: unload an expert. Answered with <see cref="ExpertUnloaded"/>.</summary>
public record UnloadExpert
{
    /// <summary>Id of this command, echoed in its answer.</summary>
    public Guid CommandId { get; init; }

    /// <summary>Zero-based MoE layer.</summary>
    public int Layer { get; init; }

    /// <summary>Zero-based expert index within the layer.</summary>
    public int Expert { get; init; }
}
