namespace DanceMoE.Data;

/// <summary>One run of the placement job: the candidate it computed and whether it migrates (table <c>placement_decisions</c>).</summary>
public sealed class PlacementDecision
{
    public long Id { get; set; }

    public DateTimeOffset DecidedAt { get; set; }

    /// <summary><c>schedule</c> (the cron trigger) or <c>run-now</c>.</summary>
    public required string Trigger { get; set; }

    /// <summary>The <c>RunPlacementNow</c> command that asked for this run, if one did.</summary>
    public Guid? CommandId { get; set; }

    public required string Algorithm { get; set; }

    /// <summary>Placement version active when the job ran.</summary>
    public int? CurrentVersion { get; set; }

    /// <summary>Placement version recorded for the candidate (equal to the current one when nothing changed).</summary>
    public int? CandidateVersion { get; set; }

    /// <summary><c>migrate</c>, <c>stay</c> or <c>skipped</c>.</summary>
    public required string Decision { get; set; }

    /// <summary>
    /// <c>activated</c>, <c>pending-saga</c> (a migration saga moves experts first), then <c>migrated</c> or
    /// <c>migration-failed</c> when the saga ends; <c>none</c> when nothing changes.
    /// </summary>
    public required string Status { get; set; }

    public required string Reason { get; set; }

    /// <summary>The migration saga started for this decision (<c>migrations.id</c>), if any.</summary>
    public Guid? MigrationId { get; set; }

    /// <summary>Remote-call seconds over the horizon with the current placement.</summary>
    public double? CurrentCostSeconds { get; set; }

    /// <summary>Remote-call seconds over the horizon with the candidate.</summary>
    public double? CandidateCostSeconds { get; set; }

    /// <summary>Transfer seconds of the moves (the paper's T_mig).</summary>
    public double? MigrationCostSeconds { get; set; }

    /// <summary>Current cost minus candidate cost minus migration cost: positive when migrating pays off.</summary>
    public double? PredictedGainSeconds { get; set; }

    public int? Loads { get; set; }

    public int? Unloads { get; set; }

    public long? BytesMoved { get; set; }

    public DateTimeOffset WindowFrom { get; set; }

    public DateTimeOffset WindowTo { get; set; }

    public string[] Edges { get; set; } = [];

    public double SolveMilliseconds { get; set; }
}
