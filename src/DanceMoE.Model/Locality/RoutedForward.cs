using DanceMoE.Model.Reference;

namespace DanceMoE.Model.Locality;

/// <summary>Logits [tokens, vocab] of one window and, per layer, the experts each token chose ([tokens, top-k]).</summary>
public sealed record RoutedWindow(float[] Logits, IReadOnlyList<int[]> Experts);

/// <summary>
/// A whole-window forward (no cache) of a Mixtral-layout checkpoint that reports every router choice.
/// Same arithmetic as <see cref="ReferenceModel"/>, whose logits it matches; tokens are grouped by expert.
/// </summary>
public sealed class RoutedForward
{
    private readonly MoeWeights _w;
    private readonly MoeConfig _c;
    private readonly float[] _cos;
    private readonly float[] _sin;

    public RoutedForward(MoeWeights weights)
    {
        ArgumentNullException.ThrowIfNull(weights);
        _w = weights;
        _c = weights.Config;
        (_cos, _sin) = Kernels.RopeTables(_c.MaxPositions, _c.HeadDim, _c.RopeTheta);
    }

    public MoeConfig Config => _c;

    public RoutedWindow Run(ReadOnlySpan<int> tokens)
    {
        var s = tokens.Length;
        var hsz = _c.HiddenSize;
        if (s == 0 || s > _c.MaxPositions)
        {
            throw new ArgumentException($"window of {s} tokens (1 to max_position_embeddings {_c.MaxPositions})", nameof(tokens));
        }

        var h = new float[s * hsz];
        for (var t = 0; t < s; t++)
        {
            if (tokens[t] < 0 || tokens[t] >= _c.VocabSize)
            {
                throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {tokens[t]} outside vocabulary of {_c.VocabSize}");
            }

            _w.Embed.AsSpan(tokens[t] * hsz, hsz).CopyTo(h.AsSpan(t * hsz));
        }

        var experts = new List<int[]>(_c.NumLayers);
        for (var l = 0; l < _c.NumLayers; l++)
        {
            Attention(_w.Layers[l], h, s);
            experts.Add(Moe(_w.Layers[l], h, s));
        }

        var normed = Kernels.RmsNorm(h, s, _w.FinalNorm, _c.RmsNormEps);
        return new RoutedWindow(Kernels.Linear(normed, s, _w.LmHead, _c.VocabSize, hsz), experts);
    }

    private void Attention(LayerWeights layer, float[] h, int s)
    {
        var hsz = _c.HiddenSize;
        var d = _c.HeadDim;
        var qw = _c.QueryWidth;
        var kw = _c.KvWidth;
        var x = Kernels.RmsNorm(h, s, layer.InputNorm, _c.RmsNormEps);
        var q = Kernels.Linear(x, s, layer.Wq, qw, hsz);
        var k = Kernels.Linear(x, s, layer.Wk, kw, hsz);
        var v = Kernels.Linear(x, s, layer.Wv, kw, hsz);
        for (var t = 0; t < s; t++)
        {
            for (var head = 0; head < _c.NumHeads; head++)
            {
                Rope(q.AsSpan((t * qw) + (head * d), d), t);
            }

            for (var head = 0; head < _c.NumKvHeads; head++)
            {
                Rope(k.AsSpan((t * kw) + (head * d), d), t);
            }
        }

        var group = _c.NumHeads / _c.NumKvHeads;
        var scale = 1f / MathF.Sqrt(d);
        var attended = new float[s * qw];
        var scores = new float[s];
        for (var t = 0; t < s; t++)
        {
            for (var head = 0; head < _c.NumHeads; head++)
            {
                var kvOffset = head / group * d;
                var qh = q.AsSpan((t * qw) + (head * d), d);
                var max = float.NegativeInfinity;
                for (var j = 0; j <= t; j++)
                {
                    scores[j] = Kernels.Dot(qh, k.AsSpan((j * kw) + kvOffset, d)) * scale;
                    max = Math.Max(max, scores[j]);
                }

                var sum = 0f;
                for (var j = 0; j <= t; j++)
                {
                    scores[j] = MathF.Exp(scores[j] - max);
                    sum += scores[j];
                }

                var output = attended.AsSpan((t * qw) + (head * d), d);
                for (var j = 0; j <= t; j++)
                {
                    var p = scores[j] / sum;
                    var vj = v.AsSpan((j * kw) + kvOffset, d);
                    for (var i = 0; i < d; i++)
                    {
                        output[i] += p * vj[i];
                    }
                }
            }
        }

        var o = Kernels.Linear(attended, s, layer.Wo, hsz, qw);
        for (var i = 0; i < h.Length; i++)
        {
            h[i] += o[i];
        }
    }

    private int[] Moe(LayerWeights layer, float[] h, int s)
    {
        var hsz = _c.HiddenSize;
        var k = _c.TopK;
        var x = Kernels.RmsNorm(h, s, layer.PostNorm, _c.RmsNormEps);
        var logits = Kernels.Linear(x, s, layer.Router, _c.NumExperts, hsz);
        var chosen = new int[s * k];
        var weights = new float[s * k];
        var rowsOf = new List<int>[_c.NumExperts];
        for (var t = 0; t < s; t++)
        {
            var choices = Routing.TopK(logits.AsSpan(t * _c.NumExperts, _c.NumExperts), k);
            for (var j = 0; j < k; j++)
            {
                chosen[(t * k) + j] = choices[j].Expert;
                weights[(t * k) + j] = choices[j].Weight;
                (rowsOf[choices[j].Expert] ??= []).Add((t * k) + j);
            }
        }

        var update = new float[h.Length];
        for (var e = 0; e < _c.NumExperts; e++)
        {
            if (rowsOf[e] is not { } slots)
            {
                continue;
            }

            var input = new float[slots.Count * hsz];
            for (var i = 0; i < slots.Count; i++)
            {
                x.AsSpan(slots[i] / k * hsz, hsz).CopyTo(input.AsSpan(i * hsz));
            }

            var y = Kernels.SwiGlu(input, slots.Count, layer.Experts[e], hsz, _c.IntermediateSize);
            for (var i = 0; i < slots.Count; i++)
            {
                var t = slots[i] / k;
                var w = weights[slots[i]];
                for (var j = 0; j < hsz; j++)
                {
                    update[(t * hsz) + j] += w * y[(i * hsz) + j];
                }
            }
        }

        for (var i = 0; i < h.Length; i++)
        {
            h[i] += update[i];
        }

        return chosen;
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
