namespace DanceMoE.Inference;

/// <summary>The token rows [rows, hidden] that one expert of a layer must process.</summary>
public sealed record ExpertBatch(int Expert, int Rows, float[] Input);

/// <summary>
/// The one seam between the forward loop and expert execution: local sessions now, a remote
/// dispatcher (one batch message per server per layer) later. Outputs come back in the order of the batches.
/// </summary>
public interface IExpertDispatcher
{
    ValueTask<IReadOnlyList<float[]>> RunAsync(int layer, IReadOnlyList<ExpertBatch> batches, CancellationToken cancellationToken);
}

/// <summary>Runs every expert on this machine's sessions, loading each on first use.</summary>
public sealed class LocalExpertDispatcher(ExpertSessionPool pool) : IExpertDispatcher
{
    public ValueTask<IReadOnlyList<float[]>> RunAsync(int layer, IReadOnlyList<ExpertBatch> batches, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batches);
        var outputs = new float[batches.Count][];
        for (var i = 0; i < batches.Count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            outputs[i] = pool.Run(layer, batches[i].Expert, batches[i].Input, batches[i].Rows);
        }

        return ValueTask.FromResult<IReadOnlyList<float[]>>(outputs);
    }
}
