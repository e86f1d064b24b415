namespace DanceMoE.Inference;

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
