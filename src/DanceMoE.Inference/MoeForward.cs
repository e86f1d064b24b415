using DanceMoE.Model;
using DanceMoE.Model.Onnx;
using Microsoft.ML.OnnxRuntime;

namespace DanceMoE.Inference;

/// <summary>
/// The forward loop over the exported subgraphs: embedding, then per layer dense (attention + router)
/// and the top-k experts through <see cref="IExpertDispatcher"/>, then the head.
/// </summary>
public sealed class MoeForward : IDisposable
{
    private readonly InferenceSession _embedding;
    private readonly InferenceSession[] _dense;
    private readonly InferenceSession _head;
    private readonly IExpertDispatcher _experts;
    private readonly RunOptions _run = new();

    public MoeForward(ModelManifest manifest, SessionFactory factory, IExpertDispatcher experts)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        ArgumentNullException.ThrowIfNull(factory);
        Manifest = manifest;
        _experts = experts ?? throw new ArgumentNullException(nameof(experts));
        _embedding = factory.Create(manifest.PathOf(manifest.Embedding.File));
        _dense = [.. manifest.Layers.Select(l => factory.Create(manifest.PathOf(l.Dense.File)))];
        _head = factory.Create(manifest.PathOf(manifest.Head.File));
    }

    public ModelManifest Manifest { get; }

    public KvState NewState() => new(Manifest.Architecture.NumLayers);

    /// <summary>
    /// Runs the tokens after those already in <paramref name="state"/> for the request of <paramref name="context"/>
    /// (its routing decisions are recorded there when it asks); returns logits [tokens, vocab].
    /// </summary>
    public async Task<float[]> ForwardAsync(IReadOnlyList<int> tokens, KvState state, ForwardContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(context);
        var c = Manifest.Architecture;
        var s = tokens.Count;
        if (s == 0)
        {
            throw new ArgumentException("no tokens to run", nameof(tokens));
        }

        if (state.Length + s > c.MaxPositions)
        {
            throw new ArgumentException($"sequence of {state.Length + s} exceeds max_position_embeddings {c.MaxPositions}", nameof(tokens));
        }

        var ids = new long[s];
        for (var i = 0; i < s; i++)
        {
            ids[i] = tokens[i] >= 0 && tokens[i] < c.VocabSize
                ? tokens[i]
                : throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {tokens[i]} outside vocabulary of {c.VocabSize}");
        }

        float[] hidden;
        using (var input = OrtValue.CreateTensorValueFromMemory(ids, [s]))
        using (var outputs = _embedding.Run(_run, [GraphNames.InputIds], [input], [GraphNames.Hidden]))
        {
            hidden = outputs[0].GetTensorDataAsSpan<float>().ToArray();
        }

        var past = state.Length;
        var total = past + s;
        var positions = Enumerable.Range(past, s).Select(p => (long)p).ToArray();
        var mask = new float[s * total];
        for (var t = 0; t < s; t++)
        {
            for (var j = past + t + 1; j < total; j++)
            {
                mask[(t * total) + j] = GraphNames.MaskedOut;
            }
        }

        for (var l = 0; l < c.NumLayers; l++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var (residual, expertInput, routerLogits) = RunDense(l, hidden, positions, mask, state, s, total);
            hidden = await MixExpertsAsync(l, residual, expertInput, routerLogits, past, s, context, cancellationToken).ConfigureAwait(false);
        }

        state.Length = total;
        using var h = OrtValue.CreateTensorValueFromMemory(hidden, [s, c.HiddenSize]);
        using var logits = _head.Run(_run, [GraphNames.Hidden], [h], [GraphNames.Logits]);
        return logits[0].GetTensorDataAsSpan<float>().ToArray();
    }

    public void Dispose()
    {
        _embedding.Dispose();
        foreach (var d in _dense)
        {
            d.Dispose();
        }

        _head.Dispose();
        _run.Dispose();
    }

    private (float[] Residual, float[] ExpertInput, float[] RouterLogits) RunDense(
        int l, float[] hidden, long[] positions, float[] mask, KvState state, int s, int total)
    {
        var c = Manifest.Architecture;
        long kv = c.NumKvHeads;
        long d = c.HeadDim;
        long past = state.Length;
        using var h = OrtValue.CreateTensorValueFromMemory(hidden, [s, c.HiddenSize]);
        using var pos = OrtValue.CreateTensorValueFromMemory(positions, [s]);
        using var m = OrtValue.CreateTensorValueFromMemory(mask, [s, total]);
        using var pk = OrtValue.CreateTensorValueFromMemory(state.Keys[l], [kv, past, d]);
        using var pv = OrtValue.CreateTensorValueFromMemory(state.Values[l], [kv, past, d]);
        using var outputs = _dense[l].Run(
            _run,
            [GraphNames.Hidden, GraphNames.PositionIds, GraphNames.AttentionMask, GraphNames.PastKey, GraphNames.PastValue],
            [h, pos, m, pk, pv],
            [GraphNames.Residual, GraphNames.ExpertInput, GraphNames.RouterLogits, GraphNames.PresentKey, GraphNames.PresentValue]);
        state.Keys[l] = outputs[3].GetTensorDataAsSpan<float>().ToArray();
        state.Values[l] = outputs[4].GetTensorDataAsSpan<float>().ToArray();
        return (outputs[0].GetTensorDataAsSpan<float>().ToArray(),
            outputs[1].GetTensorDataAsSpan<float>().ToArray(),
            outputs[2].GetTensorDataAsSpan<float>().ToArray());
    }

    /// <summary>Routes each row to its top-k experts, one batch per expert, and adds Σ wᵢ·yᵢ to the residual.</summary>
    private async Task<float[]> MixExpertsAsync(
        int l, float[] residual, float[] expertInput, float[] routerLogits, int past, int s, ForwardContext context, CancellationToken cancellationToken)
    {
        var c = Manifest.Architecture;
        var hsz = c.HiddenSize;
        var rowsByExpert = new SortedDictionary<int, List<(int Row, float Weight)>>();
        var decisions = new List<RoutingDecision>(s);
        for (var t = 0; t < s; t++)
        {
            var choices = Routing.TopK(routerLogits.AsSpan(t * c.NumExperts, c.NumExperts), c.TopK);
            decisions.Add(new RoutingDecision(l, past + t, choices));
            foreach (var choice in choices)
            {
                if (!rowsByExpert.TryGetValue(choice.Expert, out var rows))
                {
                    rows = [];
                    rowsByExpert.Add(choice.Expert, rows);
                }

                rows.Add((t, choice.Weight));
            }
        }

        var batches = rowsByExpert.Select(kv =>
        {
            var input = new float[kv.Value.Count * hsz];
            for (var i = 0; i < kv.Value.Count; i++)
            {
                expertInput.AsSpan(kv.Value[i].Row * hsz, hsz).CopyTo(input.AsSpan(i * hsz));
            }

            return new ExpertBatch(kv.Key, kv.Value.Count, input);
        }).ToList();
        var result = await _experts.RunAsync(l, batches, context, cancellationToken).ConfigureAwait(false);
        var outputs = result.Outputs;
        if (context.RecordsRouting)
        {
            var servedBy = Enumerable.Range(0, batches.Count).ToDictionary(b => batches[b].Expert, b => result.ServedBy[b]);
            context.Record(new RoutedLayer(l, decisions, servedBy, result.PlacementVersion, DateTimeOffset.UtcNow));
        }

        var groups = rowsByExpert.Values.ToList();
        for (var b = 0; b < batches.Count; b++)
        {
            var y = outputs[b];
            for (var i = 0; i < groups[b].Count; i++)
            {
                var (row, weight) = groups[b][i];
                for (var j = 0; j < hsz; j++)
                {
                    residual[(row * hsz) + j] += weight * y[(i * hsz) + j];
                }
            }
        }

        return residual;
    }
}
