namespace DanceMoE.Contracts;

/// <summary>Response to <see cref="LoadExpert"/>.</summary>
public record ExpertLoaded
{
    /// <summary>Id of this command, echoed in its answer.</summary>
    public Guid CommandId { get; init; }

    /// <summary>The edge that answered.</summary>
    public required string EdgeId { get; init; }

    /// <summary>Zero-based MoE layer.</summary>
    public int Layer { get; init; }

    /// <summary>Zero-based expert index within the layer.</summary>
    public int Expert { get; init; }

    /// <summary>Memory the edge's loaded experts take after the command, in bytes.</summary>
    public long MemoryUsedBytes { get; init; }
}
