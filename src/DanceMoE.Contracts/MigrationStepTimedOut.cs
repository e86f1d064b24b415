namespace DanceMoE.Contracts;

/// <summary>Event from the coordinator's timeout job: a migration's stage passed its deadline.</summary>
public record MigrationStepTimedOut
{
    /// <summary>The migration whose stage timed out.</summary>
    public Guid MigrationId { get; init; }

    /// <summary>The stage that timed out; the saga ignores it when it has moved on.</summary>
    public int Stage { get; init; }
}
