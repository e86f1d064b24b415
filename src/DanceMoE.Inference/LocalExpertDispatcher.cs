namespace DanceMoE.Inference;

/// <summary>Runs every expert on this machine's sessions, loading each on first use.</summary>
public sealed class LocalExpertDispatcher(ExpertSessionPool pool) : IExpertDispatcher
{
    /// <summary>The server name of every batch this dispatcher runs.</summary>
    public const string ServerName = "local";

    public ValueTask<DispatchResult> RunAsync(int layer, IReadOnlyList<ExpertBatch> batches, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batches);
        var outputs = new float[batches.Count][];
        for (var i = 0; i < batches.Count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            outputs[i] = pool.Run(layer, batches[i].Expert, batches[i].Input, batches[i].Rows);
            foreach (var request in batches[i].Requests)
            {
                request.AddLocal(1);
            }
        }

        return ValueTask.FromResult(new DispatchResult(outputs, [.. Enumerable.Repeat(ServerName, batches.Count)], 0));
    }
}
