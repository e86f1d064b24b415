namespace DanceMoE.Contracts;

/// <summary>Command to the coordinator's migration saga: move experts so that the cluster can serve <see cref="ToVersion"/>.</summary>
public record MigrationRequested
{
    /// <summary>Id of the migration (the saga's correlation id).</summary>
    public Guid MigrationId { get; init; }

    /// <summary>The placement decision that asked for it (<c>placement_decisions.id</c>).</summary>
    public long? DecisionId { get; init; }

    /// <summary>Placement version active now.</summary>
    public int FromVersion { get; init; }

    /// <summary>Every expert with the servers that hold it in <see cref="FromVersion"/>: what the edges route by when it starts.</summary>
    public IReadOnlyList<ExpertAssignment> FromAssignments { get; init; } = [];

    /// <summary>Placement version to activate once every move is done.</summary>
    public int ToVersion { get; init; }

    /// <summary>Loads and unloads in a safe order (budgets hold and every expert keeps a replica after each).</summary>
    public IReadOnlyList<ExpertMove> Moves { get; init; } = [];
}
