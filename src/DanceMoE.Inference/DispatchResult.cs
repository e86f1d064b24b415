namespace DanceMoE.Inference;

/// <summary>
/// What a dispatcher did with a layer's expert batches: the outputs in the order of the batches (null for a batch that
/// failed), the server that ran each batch, the placement version it routed by, and why each failed batch failed.
/// A failed batch fails only the requests with rows in it; the others go on.
/// </summary>
public sealed record DispatchResult(IReadOnlyList<float[]?> Outputs, IReadOnlyList<string> ServedBy, int PlacementVersion)
{
    public IReadOnlyDictionary<int, Exception> Failures { get; init; } = new Dictionary<int, Exception>();

    /// <summary>
    /// Step tokens whose experts a peer ran all together, with their weighted sum (<see cref="ExpertMix"/>, experts in
    /// order); the rows of such a token in <see cref="Outputs"/> are not filled.
    /// </summary>
    public IReadOnlyDictionary<int, float[]> TokenSums { get; init; } = new Dictionary<int, float[]>();
}
