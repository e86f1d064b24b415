namespace DanceMoE.Data;

/// <summary>One replica of one expert on one edge in a placement (table <c>placement_assignments</c>).</summary>
public sealed class PlacementAssignment
{
    public int PlacementVersion { get; set; }

    public short Layer { get; set; }

    public short Expert { get; set; }

    public required string EdgeId { get; set; }
}
