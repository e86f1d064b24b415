namespace DanceMoE.Inference;

/// <summary>
/// The token rows [rows, hidden] that one expert of a layer must process in a step, and for each row the request it
/// belongs to (each request is charged one expert call for the batch, and its share of a message by its rows).
/// </summary>
public sealed record ExpertBatch(int Expert, int Rows, float[] Input, IReadOnlyList<ForwardContext> RowOwners)
{
    /// <summary>The requests with rows in the batch, each once.</summary>
    public IReadOnlyList<ForwardContext> Requests { get; } = [.. RowOwners.Distinct()];
}
