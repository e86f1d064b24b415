namespace DanceMoE.Inference;

/// <summary>
/// The one seam between the forward loop and expert execution: local sessions, or a remote dispatcher (one batch
/// message per server per layer per step). Outputs come back in the order of the batches, with the server that ran each.
/// </summary>
public interface IExpertDispatcher
{
    /// <summary>
    /// Runs the layer's batches of one step, charging what each costs to the requests with rows in it. A batch that
    /// cannot be run anywhere is reported in <see cref="DispatchResult.Failures"/>, not thrown.
    /// </summary>
    ValueTask<DispatchResult> RunAsync(int layer, IReadOnlyList<ExpertBatch> batches, CancellationToken cancellationToken);
}
