namespace DanceMoE.Contracts;

/// <summary>Command to the coordinator (queue <c>coordinator</c>): run the placement job once, now, after any run in progress.</summary>
public record RunPlacementNow
{
    /// <summary>Id of this command; the decision the run records carries it (<c>placement_decisions.command_id</c>).</summary>
    public Guid CommandId { get; init; }

    /// <summary>Who asked (free text, for the log).</summary>
    public string? RequestedBy { get; init; }

    /// <summary>When it was sent (UTC).</summary>
    public DateTimeOffset RequestedAt { get; init; }
}
