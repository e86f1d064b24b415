namespace DanceMoE.Inference;

/// <summary>
/// What a dispatcher did with a layer's expert batches: the outputs in the order of the batches, the server that ran
/// each batch, and the placement version it routed by.
/// </summary>
public sealed record DispatchResult(IReadOnlyList<float[]> Outputs, IReadOnlyList<string> ServedBy, int PlacementVersion);
