namespace DanceMoE.Inference;

/// <summary>
/// The one seam between the forward loop and expert execution: local sessions, or a remote dispatcher (one batch
/// message per server per layer). Outputs come back in the order of the batches, with the server that ran each.
/// </summary>
public interface IExpertDispatcher
{
    /// <summary>Runs the layer's batches for the request of <paramref name="context"/>, counting what they cost there.</summary>
    ValueTask<DispatchResult> RunAsync(int layer, IReadOnlyList<ExpertBatch> batches, ForwardContext context, CancellationToken cancellationToken);
}
