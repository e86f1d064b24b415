namespace DanceMoE.Data;

/// <summary>How many times one origin edge's tokens activated one expert in one minute (table <c>activation_counts</c>).</summary>
public sealed class ActivationCount
{
    /// <summary>Start of the one-minute bucket (UTC).</summary>
    public DateTimeOffset Bucket { get; set; }

    public required string OriginEdge { get; set; }

    public short Layer { get; set; }

    public short Expert { get; set; }

    public long Count { get; set; }
}
