namespace DanceMoE.Data;

/// <summary>What the placement job decided (<c>placement_decisions.decision</c>).</summary>
public static class DecisionKind
{
    public const string Migrate = "migrate";
    public const string Stay = "stay";
    public const string Skipped = "skipped";
}

/// <summary>Where a decision stands (<c>placement_decisions.status</c>).</summary>
public static class DecisionStatus
{
    public const string None = "none";
    public const string Activated = "activated";
    public const string PendingSaga = "pending-saga";
    public const string Migrated = "migrated";
    public const string MigrationFailed = "migration-failed";
}

/// <summary>The migration saga's states as stored in <c>migrations.state</c>.</summary>
public static class MigrationStateName
{
    public const string Loading = "Loading";
    public const string Activating = "Activating";
    public const string Draining = "Draining";
    public const string Unloading = "Unloading";
    public const string Compensating = "Compensating";
    public const string Completed = "Completed";
    public const string Failed = "Failed";

    /// <summary>States in which a migration is still running.</summary>
    public static readonly IReadOnlyList<string> Running = [Loading, Activating, Draining, Unloading, Compensating];

    public static bool IsFinal(string state) => state is Completed or Failed;
}
