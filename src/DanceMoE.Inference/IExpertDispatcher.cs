namespace DanceMoE.Inference;

/// <summary>
/// The one seam between the forward loop and expert execution: local sessions now, a remote
/// dispatcher (one batch message per server per layer) later. Outputs come back in the order of the batches.
/// </summary>
public interface IExpertDispatcher
{
    ValueTask<IReadOnlyList<float[]>> RunAsync(int layer, IReadOnlyList<ExpertBatch> batches, CancellationToken cancellationToken);
}
