namespace DanceMoE.Contracts;

/// <summary>The token rows of one expert inside a batch.</summary>
public record ExpertSlice
{
    /// <summary>Zero-based expert index within the layer.</summary>
    public int Expert { get; init; }

    /// <summary>Number of token rows for this expert.</summary>
    public int Rows { get; init; }
}
