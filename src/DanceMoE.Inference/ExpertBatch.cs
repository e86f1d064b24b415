namespace DanceMoE.Inference;

/// <summary>
/// The token rows [rows, hidden] that one expert of a layer must process in a step, and for each row the request it
/// belongs to (each request is charged one expert call for the batch, and its share of a message by its rows).
/// </summary>
public sealed record ExpertBatch(int Expert, int Rows, float[] Input, IReadOnlyList<ForwardContext> RowOwners)
{
    /// <summary>The requests with rows in the batch, each once.</summary>
    public IReadOnlyList<ForwardContext> Requests { get; } = [.. RowOwners.Distinct()];

    /// <summary>
    /// For each row, which token of the step it is (the same number in every batch of the layer for the same token), so a
    /// peer is sent a token's hidden state once however many of its experts it runs; empty: every row is its own token.
    /// </summary>
    public IReadOnlyList<int> StepTokens { get; init; } = [];

    /// <summary>
    /// For each row, the router's weight of this expert for its token; with <see cref="StepTokens"/>, a peer that runs all
    /// of a token's experts may answer their weighted sum (<see cref="DispatchResult.TokenSums"/>). Empty: it may not.
    /// </summary>
    public IReadOnlyList<float> Weights { get; init; } = [];
}
