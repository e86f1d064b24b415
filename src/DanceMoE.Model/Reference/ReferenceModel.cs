namespace DanceMoE.Model.Reference;

/// <summary>
/// The plain C# forward of a Mixtral-layout checkpoint: the numerical oracle for the exported subgraphs.
/// </summary>
public sealed class ReferenceModel
{
    private readonly MoeWeights _w;
    private readonly MoeConfig _c;
    private readonly float[] _cos;
    private readonly float[] _sin;
    private readonly Func<int, int, ExpertWeights>? _loadExpert;

    public ReferenceModel(MoeWeights weights)
        : this(weights, null)
    {
    }

    private ReferenceModel(MoeWeights weights, Func<int, int, ExpertWeights>? loadExpert)
    {
        ArgumentNullException.ThrowIfNull(weights);
        _w = weights;
        _loadExpert = loadExpert;
        _c = weights.Config;
        (_cos, _sin) = Kernels.RopeTables(_c.MaxPositions, _c.HeadDim, _c.RopeTheta);
    }

    public MoeConfig Config => _c;

    /// <summary>
    /// A reference that keeps the dense weights in memory and reads experts from the checkpoint when a token
    /// is routed to them, keeping up to <paramref name="cacheBytes"/> of them: for checkpoints larger than memory.
    /// </summary>
    public static ReferenceModel Streaming(Checkpoint checkpoint, long cacheBytes = 1L << 30)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        var c = checkpoint.Config;
        var layers = Enumerable.Range(0, c.NumLayers).Select(l => MoeWeights.LoadLayer(checkpoint, l, withExperts: false)).ToList();
        var embed = checkpoint.Read(MixtralNames.Embed, c.VocabSize, c.HiddenSize);
        var head = c.TieWordEmbeddings && !checkpoint.Has(MixtralNames.LmHead) ? embed : checkpoint.Read(MixtralNames.LmHead, c.VocabSize, c.HiddenSize);
        var weights = new MoeWeights(c, embed, layers, checkpoint.Read(MixtralNames.FinalNorm, c.HiddenSize), head);
        var expertBytes = 3L * c.HiddenSize * c.IntermediateSize * sizeof(float);
        var capacity = (int)Math.Max(1, cacheBytes / expertBytes);
        var cache = new Dictionary<(int, int), ExpertWeights>();
        return new ReferenceModel(weights, (l, e) =>
        {
            if (!cache.TryGetValue((l, e), out var expert))
            {
                if (cache.Count >= capacity)
                {
                    cache.Clear();
                }

                expert = MoeWeights.LoadExpert(checkpoint, l, e);
                cache.Add((l, e), expert);
            }

            return expert;
        });
    }

    public ReferenceKvCache NewCache() => new(_c.NumLayers);

    /// <summary>
    /// Runs the tokens after those already in the cache; returns logits [tokens, vocab]. <paramref name="onRouting"/>
    /// sees every router decision as (layer, position, choices).
    /// </summary>
    public float[] Forward(ReadOnlySpan<int> tokens, ReferenceKvCache cache, Action<int, int, ExpertChoice[]>? onRouting = null)
    {
        ArgumentNullException.ThrowIfNull(cache);
        var s = tokens.Length;
        var hsz = _c.HiddenSize;
        if (cache.Length + s > _c.MaxPositions)
        {
            throw new ArgumentException($"sequence of {cache.Length + s} exceeds max_position_embeddings {_c.MaxPositions}", nameof(tokens));
        }

        var past = cache.Length;
        var h = new float[s * hsz];
        for (var t = 0; t < s; t++)
        {
            if (tokens[t] < 0 || tokens[t] >= _c.VocabSize)
            {
                throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {tokens[t]} outside vocabulary of {_c.VocabSize}");
            }

            _w.Embed.AsSpan(tokens[t] * hsz, hsz).CopyTo(h.AsSpan(t * hsz));
        }

        for (var l = 0; l < _c.NumLayers; l++)
        {
            Attention(l, h, s, past, cache);
            Moe(l, h, s, past, onRouting);
        }

        var normed = Kernels.RmsNorm(h, s, _w.FinalNorm, _c.RmsNormEps);
        return Kernels.Linear(normed, s, _w.LmHead, _c.VocabSize, hsz);
    }

    private void Attention(int l, float[] h, int s, int past, ReferenceKvCache cache)
    {
        var layer = _w.Layers[l];
        var hsz = _c.HiddenSize;
        var d = _c.HeadDim;
        var x = Kernels.RmsNorm(h, s, layer.InputNorm, _c.RmsNormEps);
        var q = Kernels.Linear(x, s, layer.Wq, _c.QueryWidth, hsz);
        var k = Kernels.Linear(x, s, layer.Wk, _c.KvWidth, hsz);
        var v = Kernels.Linear(x, s, layer.Wv, _c.KvWidth, hsz);
        for (var t = 0; t < s; t++)
        {
            for (var head = 0; head < _c.NumHeads; head++)
            {
                Rope(q.AsSpan((t * _c.QueryWidth) + (head * d), d), past + t);
            }

            for (var head = 0; head < _c.NumKvHeads; head++)
            {
                Rope(k.AsSpan((t * _c.KvWidth) + (head * d), d), past + t);
            }

            cache.Keys[l].Add(k.AsSpan(t * _c.KvWidth, _c.KvWidth).ToArray());
            cache.Values[l].Add(v.AsSpan(t * _c.KvWidth, _c.KvWidth).ToArray());
        }

        var keys = cache.Keys[l];
        var values = cache.Values[l];
        var group = _c.NumHeads / _c.NumKvHeads;
        var scale = 1f / MathF.Sqrt(d);
        var attended = new float[s * _c.QueryWidth];
        var scores = new float[past + s];
        for (var t = 0; t < s; t++)
        {
            var visible = past + t + 1;
            for (var head = 0; head < _c.NumHeads; head++)
            {
                var kvOffset = head / group * d;
                var qh = q.AsSpan((t * _c.QueryWidth) + (head * d), d);
                var max = float.NegativeInfinity;
                for (var j = 0; j < visible; j++)
                {
                    scores[j] = Kernels.Dot(qh, keys[j].AsSpan(kvOffset, d)) * scale;
                    max = Math.Max(max, scores[j]);
                }

                var sum = 0f;
                for (var j = 0; j < visible; j++)
                {
                    scores[j] = MathF.Exp(scores[j] - max);
                    sum += scores[j];
                }

                var output = attended.AsSpan((t * _c.QueryWidth) + (head * d), d);
                for (var j = 0; j < visible; j++)
                {
                    var p = scores[j] / sum;
                    var vj = values[j].AsSpan(kvOffset, d);
                    for (var i = 0; i < d; i++)
                    {
                        output[i] += p * vj[i];
                    }
                }
            }
        }

        var o = Kernels.Linear(attended, s, layer.Wo, hsz, _c.QueryWidth);
        for (var i = 0; i < h.Length; i++)
        {
            h[i] += o[i];
        }
    }

    private void Moe(int l, float[] h, int s, int past, Action<int, int, ExpertChoice[]>? onRouting)
    {
        var layer = _w.Layers[l];
        var hsz = _c.HiddenSize;
        var x = Kernels.RmsNorm(h, s, layer.PostNorm, _c.RmsNormEps);
        var logits = Kernels.Linear(x, s, layer.Router, _c.NumExperts, hsz);
        for (var t = 0; t < s; t++)
        {
            var row = x.AsSpan(t * hsz, hsz).ToArray();
            var choices = Routing.TopK(logits.AsSpan(t * _c.NumExperts, _c.NumExperts), _c.TopK);
            onRouting?.Invoke(l, past + t, choices);
            foreach (var choice in choices)
            {
                var y = Kernels.SwiGlu(row, 1, _loadExpert?.Invoke(l, choice.Expert) ?? layer.Experts[choice.Expert], hsz, _c.IntermediateSize);
                for (var i = 0; i < hsz; i++)
                {
                    h[(t * hsz) + i] += choice.Weight * y[i];
                }
            }
        }
    }

    private void Rope(Span<float> x, int position)
    {
        var d = x.Length;
        var half = d / 2;
        var cos = _cos.AsSpan(position * d, d);
        var sin = _sin.AsSpan(position * d, d);
        for (var i = 0; i < half; i++)
        {
            var a = x[i];
            var b = x[i + half];
            x[i] = (a * cos[i]) - (b * sin[i]);
            x[i + half] = (b * cos[i + half]) + (a * sin[i + half]);
        }
    }
}
