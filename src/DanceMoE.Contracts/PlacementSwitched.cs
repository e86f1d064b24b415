namespace DanceMoE.Contracts;

/// <summary>Answer to <see cref="ActivatePlacement"/>: the placement is active and every live edge acknowledged it.</summary>
public record PlacementSwitched
{
    /// <summary>The migration that asked.</summary>
    public Guid MigrationId { get; init; }

    /// <summary>The saga stage that asked.</summary>
    public int Stage { get; init; }

    /// <summary>The version now active.</summary>
    public int Version { get; init; }
}
