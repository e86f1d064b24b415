using MassTransit;

namespace DanceMoE.Data;

/// <summary>
/// One migration saga (table <c>migrations</c>): the moves of a plan, how far it got, and how it ended. Rows stay after
/// the saga finishes, so the table is also the history analysts and <c>dancemoe status</c> read.
/// </summary>
public sealed class MigrationState : SagaStateMachineInstance
{
    /// <summary>The migration id (<c>MigrationRequested.MigrationId</c>).</summary>
    public Guid CorrelationId { get; set; }

    /// <summary>State machine state by name: Loading, Activating, Draining, Unloading, Compensating, Completed, Failed.</summary>
    public string CurrentState { get; set; } = "";

    /// <summary>The placement decision that asked for it (<c>placement_decisions.id</c>).</summary>
    public long? DecisionId { get; set; }

    public int FromVersion { get; set; }

    public int ToVersion { get; set; }

    /// <summary>The plan's moves in order, as JSON (<c>[{"action":"load","edge":"edge-1","layer":0,"expert":3}, ...]</c>).</summary>
    public string Moves { get; set; } = "[]";

    /// <summary>Index of the move in progress.</summary>
    public int MoveIndex { get; set; }

    /// <summary>Grows with every command the saga sends; a timeout or answer for an older stage is stale and ignored.</summary>
    public int Stage { get; set; }

    /// <summary>When the stage in progress times out (scanned by the coordinator's timeout job).</summary>
    public DateTimeOffset? DeadlineAt { get; set; }

    /// <summary>Times the move in progress was sent again after a timeout.</summary>
    public int Retries { get; set; }

    /// <summary>Replicas the edges route by now, as JSON <c>["edge-1/0/3", ...]</c> (edge/layer/expert).</summary>
    public string Routed { get; set; } = "[]";

    /// <summary>Replicas this saga loaded, as JSON: what compensation unloads.</summary>
    public string LoadedByMigration { get; set; } = "[]";

    /// <summary>The placement the saga asked the coordinator to activate last.</summary>
    public int? ActivatedVersion { get; set; }

    public int LoadsDone { get; set; }

    public int UnloadsDone { get; set; }

    public DateTimeOffset StartedAt { get; set; }

    public DateTimeOffset UpdatedAt { get; set; }

    public DateTimeOffset? FinishedAt { get; set; }

    /// <summary>Why it failed or was compensated.</summary>
    public string? Reason { get; set; }
}
