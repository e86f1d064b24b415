namespace DanceMoE.Data;

/// <summary>One computed placement of experts on edges (table <c>placements</c>); at most one is active.</summary>
public sealed class PlacementVersion
{
    public int Version { get; set; }

    public DateTimeOffset CreatedAt { get; set; }

    /// <summary>Algorithm that computed it: <c>uniform</c>, <c>redundance</c>, <c>eplb</c>, <c>dancemoe</c>, <c>optimal</c>, ...</summary>
    public required string Algorithm { get; set; }

    /// <summary>The algorithm's predicted cost (its own objective: expected remote calls or modelled latency).</summary>
    public double PredictedCost { get; set; }

    /// <summary>Digest of the inputs (activation window, budgets, links) the placement was computed from.</summary>
    public required string InputsDigest { get; set; }

    public bool IsActive { get; set; }

    public DateTimeOffset? ActivatedAt { get; set; }

    public List<PlacementAssignment> Assignments { get; } = [];
}
