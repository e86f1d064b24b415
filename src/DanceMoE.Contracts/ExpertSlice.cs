namespace DanceMoE.Contracts;

/// <summary>The token rows of one expert inside a batch.</summary>
public record ExpertSlice
{
    /// <summary>Zero-based expert index within the layer.</summary>
    public int Expert { get; init; }

    /// <summary>Number of token rows for this expert.</summary>
    public int Rows { get; init; }

    /// <summary>
    /// In a request, the rows of <see cref="RunExpertBatch.Hidden"/> this expert runs on, one per row, in order: a token
    /// several experts of the batch need is sent once. Empty: the slice's own rows follow in the payload in slice order.
    /// </summary>
    public IReadOnlyList<int> TokenRows { get; init; } = [];

    /// <summary>In a request with <see cref="RunExpertBatch.SumRows"/>, the router's weight of each row for this expert.</summary>
    public IReadOnlyList<float> Weights { get; init; } = [];
}
