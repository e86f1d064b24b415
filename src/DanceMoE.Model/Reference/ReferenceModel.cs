namespace DanceMoE.Model.Reference;

/// <summary>
/// The plain C# forward of a checkpoint of any supported family, written after the Hugging Face modeling code: the
/// numerical oracle for the exported subgraphs. Routing decisions are reported by routed layer (dense layers skipped).
/// </summary>
public sealed class ReferenceModel
{
    private readonly MoeWeights _w;
    private readonly MoeConfig _c;
    private readonly float[] _cos;
    private readonly float[] _sin;
    private readonly int[] _routedIndex;
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
        (_cos, _sin) = Kernels.RopeTables(_c.MaxPositions, Rotary.InverseFrequencies(_c), Rotary.CosSinScale(_c));
        _routedIndex = new int[_c.NumLayers];
        for (int l = 0, r = 0; l < _c.NumLayers; l++)
        {
            _routedIndex[l] = _c.IsDenseLayer(l) ? -1 : r++;
        }
    }

    public MoeConfig Config => _c;

    /// <summary>
    /// A reference that keeps the dense weights in memory and reads experts from the checkpoint when a token
    /// is routed to them, keeping up to <paramref name="cacheBytes"/> of them: for checkpoints larger than memory.
    /// Experts compute with their weights as stored in <paramref name="expertWeights"/> (quantised ones dequantised).
    /// </summary>
    public static ReferenceModel Streaming(Checkpoint checkpoint, long cacheBytes = 1L << 30, ExpertWeightFormat expertWeights = ExpertWeightFormat.Fp32)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        var c = checkpoint.Config;
        var weights = MoeWeights.Load(checkpoint, withExperts: false);
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

                expert = ExpertQuantization.RoundTrip(MoeWeights.LoadExpert(checkpoint, l, e), c, expertWeights);
                cache.Add((l, e), expert);
            }

            return expert;
        });
    }

    public ReferenceKvCache NewCache() => new(_c.NumLayers);

    /// <summary>
    /// Runs the tokens after those already in the cache; returns logits [tokens, vocab]. <paramref name="onRouting"/>
    /// sees every router decision as (routed layer, position, choices).
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
            Mlp(l, h, s, past, onRouting);
        }

        var normed = Kernels.RmsNorm(h, s, _w.FinalNorm, _c.RmsNormEps);
        return Kernels.Linear(normed, s, _w.LmHead, _c.VocabSize, hsz);
    }

    private void Attention(int l, float[] h, int s, int past, ReferenceKvCache cache)
    {
        var a = _w.Layers[l].Attention;
        var x = Kernels.RmsNorm(h, s, _w.Layers[l].InputNorm, _c.RmsNormEps);
        var (q, k, v) = _c.Mla is null ? Standard(a, x, s, past) : Latent(_c.Mla, a, x, s, past);
        var heads = _c.NumHeads;
        var kvHeads = _c.CacheHeads;
        var dk = _c.KeyHeadDim;
        var dv = _c.ValueHeadDim;
        for (var t = 0; t < s; t++)
        {
            cache.Keys[l].Add(k.AsSpan(t * kvHeads * dk, kvHeads * dk).ToArray());
            cache.Values[l].Add(v.AsSpan(t * kvHeads * dv, kvHeads * dv).ToArray());
        }

        var keys = cache.Keys[l];
        var values = cache.Values[l];
        var group = heads / kvHeads;
        var scale = Rotary.SoftmaxScale(_c);
        var attended = new float[s * heads * dv];
        var scores = new float[past + s];
        for (var t = 0; t < s; t++)
        {
            var visible = past + t + 1;
            for (var head = 0; head < heads; head++)
            {
                var kv = head / group;
                var qh = q.AsSpan(((t * heads) + head) * dk, dk);
                var max = float.NegativeInfinity;
                for (var j = 0; j < visible; j++)
                {
                    scores[j] = Kernels.Dot(qh, keys[j].AsSpan(kv * dk, dk)) * scale;
                    max = Math.Max(max, scores[j]);
                }

                var sum = 0f;
                for (var j = 0; j < visible; j++)
                {
                    scores[j] = MathF.Exp(scores[j] - max);
                    sum += scores[j];
                }

                var output = attended.AsSpan(((t * heads) + head) * dv, dv);
                for (var j = 0; j < visible; j++)
                {
                    var p = scores[j] / sum;
                    var vj = values[j].AsSpan(kv * dv, dv);
                    for (var i = 0; i < dv; i++)
                    {
                        output[i] += p * vj[i];
                    }
                }
            }
        }

        var o = Kernels.Linear(attended, s, a.Wo, _c.HiddenSize, heads * dv);
        for (var i = 0; i < h.Length; i++)
        {
            h[i] += o[i];
        }
    }

    /// <summary>Grouped-query attention's q, k, v (with Qwen2-MoE's biases and OLMoE's q/k norms), RoPE over whole heads.</summary>
    private (float[] Q, float[] K, float[] V) Standard(AttentionWeights a, float[] x, int s, int past)
    {
        var hsz = _c.HiddenSize;
        var d = _c.HeadDim;
        var q = Projection(x, s, a.Wq!, a.QBias, _c.QueryWidth, hsz);
        var k = Projection(x, s, a.Wk!, a.KBias, _c.KvWidth, hsz);
        var v = Projection(x, s, a.Wv!, a.VBias, _c.KvWidth, hsz);
        if (a.QNorm is not null && a.KNorm is not null)
        {
            q = Kernels.RmsNorm(q, s, a.QNorm, _c.RmsNormEps);
            k = Kernels.RmsNorm(k, s, a.KNorm, _c.RmsNormEps);
        }

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
        }

        return (q, k, v);
    }

    /// <summary>
    /// DeepSeek-V2's multi-head latent attention as in its modeling_deepseek: q splits into nope and rope parts; kv_a
    /// gives the compressed kv (normed, then kv_b gives per-head k_nope and v) and one k_pe shared by all heads; the rope
    /// parts are de-interleaved, then rotated. Returns full per-head keys [nope | rope] and values.
    /// </summary>
    private (float[] Q, float[] K, float[] V) Latent(MlaConfig mla, AttentionWeights a, float[] x, int s, int past)
    {
        var hsz = _c.HiddenSize;
        var heads = _c.NumHeads;
        var (nope, rope, dv, rank) = (mla.QkNopeHeadDim, mla.QkRopeHeadDim, mla.VHeadDim, mla.KvLoraRank);
        var dk = nope + rope;
        var q = mla.QLoraRank is { } qr
            ? Kernels.Linear(Kernels.RmsNorm(Kernels.Linear(x, s, a.QA!, qr, hsz), s, a.QANorm!, MlaConfig.LatentNormEps), s, a.QB!, _c.QueryWidth, qr)
            : Kernels.Linear(x, s, a.Wq!, _c.QueryWidth, hsz);
        var kvA = Kernels.Linear(x, s, a.KvA!, rank + rope, hsz);
        var compressed = new float[s * rank];
        for (var t = 0; t < s; t++)
        {
            kvA.AsSpan(t * (rank + rope), rank).CopyTo(compressed.AsSpan(t * rank));
        }

        var kv = Kernels.Linear(Kernels.RmsNorm(compressed, s, a.KvANorm!, MlaConfig.LatentNormEps), s, a.KvB!, heads * (nope + dv), rank);
        var k = new float[s * heads * dk];
        var v = new float[s * heads * dv];
        for (var t = 0; t < s; t++)
        {
            var kPe = kvA.AsSpan((t * (rank + rope)) + rank, rope);
            Deinterleave(kPe);
            Rope(kPe, past + t);
            for (var head = 0; head < heads; head++)
            {
                var qPe = q.AsSpan((((t * heads) + head) * dk) + nope, rope);
                Deinterleave(qPe);
                Rope(qPe, past + t);
                var row = kv.AsSpan(((t * heads) + head) * (nope + dv), nope + dv);
                var key = k.AsSpan(((t * heads) + head) * dk, dk);
                row[..nope].CopyTo(key);
                kPe.CopyTo(key[nope..]);
                row[nope..].CopyTo(v.AsSpan(((t * heads) + head) * dv, dv));
            }
        }

        return (q, k, v);
    }

    private void Mlp(int l, float[] h, int s, int past, Action<int, int, ExpertChoice[]>? onRouting)
    {
        var layer = _w.Layers[l];
        var hsz = _c.HiddenSize;
        var x = Kernels.RmsNorm(h, s, layer.PostNorm, _c.RmsNormEps);
        if (layer.DenseMlp is { } dense)
        {
            Accumulate(h, Kernels.SwiGlu(x, s, dense, hsz, _c.DenseIntermediateSize), _ => 1f);
            return;
        }

        if (layer.Shared is { } shared)
        {
            var gate = layer.SharedGate is { } g ? Kernels.Linear(x, s, g, 1, hsz) : null;
            Accumulate(h, Kernels.SwiGlu(x, s, shared, hsz, _c.SharedIntermediateSize), t => gate is null ? 1f : 1f / (1f + MathF.Exp(-gate[t])));
        }

        var logits = Kernels.Linear(x, s, layer.Router!, _c.NumExperts, hsz);
        for (var t = 0; t < s; t++)
        {
            var row = x.AsSpan(t * hsz, hsz).ToArray();
            var choices = Routing.Choose(_c, logits.AsSpan(t * _c.NumExperts, _c.NumExperts));
            onRouting?.Invoke(_routedIndex[l], past + t, choices);
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

    private void Accumulate(float[] h, float[] y, Func<int, float> rowScale)
    {
        var hsz = _c.HiddenSize;
        for (var i = 0; i < h.Length; i++)
        {
            h[i] += rowScale(i / hsz) * y[i];
        }
    }

    private static float[] Projection(float[] x, int rows, float[] w, float[]? bias, int outputs, int inputs)
    {
        var y = Kernels.Linear(x, rows, w, outputs, inputs);
        if (bias is not null)
        {
            for (var i = 0; i < y.Length; i++)
            {
                y[i] += bias[i % outputs];
            }
        }

        return y;
    }

    /// <summary>DeepSeek's rope input order: [x0, x2, x4, ..., x1, x3, ...] (its q_pe/k_pe are stored interleaved).</summary>
    private static void Deinterleave(Span<float> x)
    {
        var copy = x.ToArray();
        var half = x.Length / 2;
        for (var i = 0; i < half; i++)
        {
            x[i] = copy[2 * i];
            x[half + i] = copy[(2 * i) + 1];
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
