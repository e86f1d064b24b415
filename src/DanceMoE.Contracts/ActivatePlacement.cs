namespace DanceMoE.Contracts;

/// <summary>
/// Command from a migration saga to the coordinator's registry: activate a placement on every live edge and answer
/// <see cref="PlacementSwitched"/> once they all route by it. Either <see cref="Version"/> names a registered placement
/// or <see cref="Assignments"/> describe a new one (registered once per migration and stage, even when redelivered).
/// </summary>
public record ActivatePlacement
{
    /// <summary>The migration that asks.</summary>
    public Guid MigrationId { get; init; }

    /// <summary>The saga stage that asks; echoed in the answer.</summary>
    public int Stage { get; init; }

    /// <summary>A registered placement version, or 0 to register <see cref="Assignments"/>.</summary>
    public int Version { get; init; }

    /// <summary>Every expert of every layer with the servers that hold it (when <see cref="Version"/> is 0).</summary>
    public IReadOnlyList<ExpertAssignment> Assignments { get; init; } = [];
}
