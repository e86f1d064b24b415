using System.Globalization;
using Google.Protobuf;
using static DanceMoE.Model.Onnx.GraphNames;
using DataType = DanceMoE.Model.Onnx.Proto.TensorProto.Types.DataType;

namespace DanceMoE.Model.Onnx;

/// <summary>
/// Writes a checkpoint as ONNX subgraphs plus `manifest.json`:
/// <code>
/// input_ids ─ embedding.onnx ─ hidden ─┬ dense.L.onnx ─ residual, expert_input, router_logits, present kv
///                                      │   expert.L.E.onnx (x → y) for the top-k experts of each row
///                                      └ hidden = residual + Σ wᵢ·yᵢ  (next layer) … head.onnx ─ logits
/// </code>
/// </summary>
public static class OnnxExporter
{
    public static ModelManifest Export(Checkpoint checkpoint, string outDirectory, TensorDtype weightDtype, Action<string>? log = null)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        if (weightDtype == TensorDtype.BF16)
        {
            throw new ArgumentException("export writes f32 or f16 weights", nameof(weightDtype));
        }

        var c = checkpoint.Config;
        Directory.CreateDirectory(outDirectory);
        var embedWeights = checkpoint.Read(MixtralNames.Embed, c.VocabSize, c.HiddenSize);
        var embedding = Save(outDirectory, "embedding.onnx", BuildEmbedding(c, embedWeights, weightDtype));
        var layers = new List<LayerFiles>();
        for (var l = 0; l < c.NumLayers; l++)
        {
            var layer = MoeWeights.LoadLayer(checkpoint, l, withExperts: false);
            var dense = Save(outDirectory, Name($"dense.{l}.onnx"), BuildDense(c, layer, weightDtype));
            var experts = new List<ExpertFile>();
            for (var e = 0; e < c.NumExperts; e++)
            {
                var file = Save(outDirectory, Name($"expert.{l}.{e}.onnx"), BuildExpert(c, MoeWeights.LoadExpert(checkpoint, l, e), weightDtype));
                experts.Add(new ExpertFile(l, e, file.File, file.Sha256, file.Bytes, file.WeightBytes));
            }

            layers.Add(new LayerFiles(l, dense, experts));
            log?.Invoke($"layer {l}: dense + {c.NumExperts} experts written");
        }

        var head = c.TieWordEmbeddings && !checkpoint.Has(MixtralNames.LmHead)
            ? embedWeights
            : checkpoint.Read(MixtralNames.LmHead, c.VocabSize, c.HiddenSize);
        var headFile = Save(outDirectory, "head.onnx", BuildHead(c, checkpoint.Read(MixtralNames.FinalNorm, c.HiddenSize), head, weightDtype));
        var tokenizer = checkpoint.Tokenizer;
        var manifest = new ModelManifest
        {
            Opset = GraphBuilder.OpsetVersion,
            IrVersion = GraphBuilder.IrVersion,
            WeightDtype = weightDtype == TensorDtype.F32 ? "f32" : "f16",
            Architecture = c,
            Tokenizer = tokenizer is null ? null : new TokenizerInfo(ByteTokenizer.Kind, tokenizer.VocabSize, tokenizer.BosTokenId, tokenizer.EosTokenId),
            Signatures = Signatures(c),
            Embedding = embedding,
            Layers = layers,
            Head = headFile,
            Directory = outDirectory,
        };
        manifest.Save(outDirectory);
        CopyHeldOut(checkpoint.Directory, outDirectory);
        return manifest;
    }

    /// <summary>The checkpoint's held-out samples go with the export, so <c>model eval</c> measures it on them.</summary>
    private static void CopyHeldOut(string checkpointDirectory, string outDirectory)
    {
        var source = Path.Combine(checkpointDirectory, Locality.HeldOutTrace.Folder);
        if (!Directory.Exists(source) || Path.GetFullPath(checkpointDirectory) == Path.GetFullPath(outDirectory))
        {
            return;
        }

        var target = Directory.CreateDirectory(Path.Combine(outDirectory, Locality.HeldOutTrace.Folder)).FullName;
        foreach (var file in Directory.GetFiles(source, "*.txt"))
        {
            File.Copy(file, Path.Combine(target, Path.GetFileName(file)), overwrite: true);
        }
    }

    public static Dictionary<string, GraphSignature> Signatures(MoeConfig c)
    {
        ArgumentNullException.ThrowIfNull(c);
        string N(int value) => value.ToString(CultureInfo.InvariantCulture);
        TensorSpec F(string name, params string[] shape) => new(name, "float32", shape);
        TensorSpec I(string name, params string[] shape) => new(name, "int64", shape);
        return new Dictionary<string, GraphSignature>(StringComparer.Ordinal)
        {
            [EmbeddingGraph] = new([I(InputIds, "seq")], [F(Hidden, "seq", N(c.HiddenSize))]),
            [DenseGraph] = new(
                [
                    F(Hidden, "seq", N(c.HiddenSize)), I(PositionIds, "seq"), F(AttentionMask, "seq", "total"),
                    F(PastKey, "past", N(c.NumKvHeads), N(c.HeadDim)), F(PastValue, "past", N(c.NumKvHeads), N(c.HeadDim)),
                ],
                [
                    F(Residual, "seq", N(c.HiddenSize)), F(ExpertInput, "seq", N(c.HiddenSize)), F(RouterLogits, "seq", N(c.NumExperts)),
                    F(NewKey, "seq", N(c.NumKvHeads), N(c.HeadDim)), F(NewValue, "seq", N(c.NumKvHeads), N(c.HeadDim)),
                ]),
            [ExpertGraph] = new([F(ExpertX, "rows", N(c.HiddenSize))], [F(ExpertY, "rows", N(c.HiddenSize))]),
            [HeadGraph] = new([F(Hidden, "seq", N(c.HiddenSize))], [F(Logits, "seq", N(c.VocabSize))]),
        };
    }

    /// <summary>A lone MatMul x[rows, inner] · W[inner, outer] with seeded weights: the baseline for expert benchmarks.</summary>
    public static void WriteMatMul(string path, int inner, int outer, ulong seed)
    {
        var random = new SplitMix64(seed);
        var w = new float[inner * outer];
        for (var i = 0; i < w.Length; i++)
        {
            w[i] = (float)(random.NextDouble() - 0.5);
        }

        var g = new GraphBuilder("matmul", TensorDtype.F32);
        g.Input(ExpertX, DataType.Float, "rows", inner);
        g.MatMul(ExpertX, g.Weight("w", w, inner, outer), ExpertY);
        g.Output(ExpertY, DataType.Float, "rows", outer);
        using var stream = File.Create(path);
        g.ToModel().WriteTo(stream);
    }

    internal static GraphBuilder BuildEmbedding(MoeConfig c, float[] embed, TensorDtype dtype)
    {
        var g = new GraphBuilder(EmbeddingGraph, dtype);
        g.Input(InputIds, DataType.Int64, "seq");
        var table = g.Weight("embed_tokens", embed, c.VocabSize, c.HiddenSize);
        g.Node("Gather", [table, InputIds], [GraphBuilder.Attr("axis", 0)], Hidden);
        g.Output(Hidden, DataType.Float, "seq", c.HiddenSize);
        return g;
    }

    internal static GraphBuilder BuildDense(MoeConfig c, LayerWeights w, TensorDtype dtype)
    {
        var g = new GraphBuilder(DenseGraph, dtype);
        long d = c.HeadDim;
        long kv = c.NumKvHeads;
        long heads = c.NumHeads;
        g.Input(Hidden, DataType.Float, "seq", c.HiddenSize);
        g.Input(PositionIds, DataType.Int64, "seq");
        g.Input(AttentionMask, DataType.Float, "seq", "total");
        // The KV cache is position-major, [past, kv, d], so that the runtime can append a step's rows in place
        // and hand the graph the filled prefix of a buffer allocated once.
        g.Input(PastKey, DataType.Float, "past", kv, d);
        g.Input(PastValue, DataType.Float, "past", kv, d);

        var x = g.RmsNorm(Hidden, g.Weight("input_layernorm", w.InputNorm, c.HiddenSize), c.RmsNormEps);
        var q = HeadsFirst(g, g.MatMul(x, Projection(g, "q_proj", w.Wq, c.QueryWidth, c.HiddenSize)), heads, d);
        var k = HeadsFirst(g, g.MatMul(x, Projection(g, "k_proj", w.Wk, c.KvWidth, c.HiddenSize)), kv, d);
        var v = HeadsFirst(g, g.MatMul(x, Projection(g, "v_proj", w.Wv, c.KvWidth, c.HiddenSize)), kv, d);

        // RoPE angles from the positions: [seq, 1] · inv_freq[d/2], halves duplicated as in Hugging Face.
        var invFreq = Enumerable.Range(0, c.HeadDim / 2).Select(i => (float)(1.0 / Math.Pow(c.RopeTheta, 2.0 * i / c.HeadDim))).ToArray();
        var positions = g.Reshape(g.Node("Cast", [PositionIds], [GraphBuilder.Attr("to", (long)DataType.Float)]), -1, 1);
        var freqs = g.Mul(positions, g.Floats("inv_freq", invFreq, invFreq.Length));
        var angles = g.Concat(1, null, freqs, freqs);
        var cos = g.Node("Cos", [angles]);
        var sin = g.Node("Sin", [angles]);
        var qr = Rope(g, q, cos, sin, d);
        var kr = Rope(g, k, cos, sin, d);

        g.Node("Transpose", [kr], [GraphBuilder.Ints("perm", [1, 0, 2])], NewKey);
        g.Node("Transpose", [v], [GraphBuilder.Ints("perm", [1, 0, 2])], NewValue);
        var keys = g.Concat(1, null, g.Transpose(PastKey, 1, 0, 2), kr);
        var values = g.Concat(1, null, g.Transpose(PastValue, 1, 0, 2), v);

        // Grouped-query attention: query heads [kv, group, seq, d] against shared heads [kv, 1, total, d].
        var q4 = g.Reshape(qr, kv, heads / kv, -1, d);
        var kT = g.Transpose(g.Reshape(keys, kv, 1, -1, d), 0, 1, 3, 2);
        var scores = g.Mul(g.MatMul(q4, kT), g.Scalar(1f / MathF.Sqrt(c.HeadDim)));
        var probs = g.Node("Softmax", [g.Add(scores, AttentionMask)], [GraphBuilder.Attr("axis", -1)]);
        var context = g.MatMul(probs, g.Reshape(values, kv, 1, -1, d));
        var merged = g.Reshape(g.Transpose(g.Reshape(context, heads, -1, d), 1, 0, 2), 0, heads * d);
        var attention = g.MatMul(merged, Projection(g, "o_proj", w.Wo, c.HiddenSize, c.QueryWidth));
        var residual = g.Add(Hidden, attention, Residual);

        var normed = g.RmsNorm(residual, g.Weight("post_attention_layernorm", w.PostNorm, c.HiddenSize), c.RmsNormEps, ExpertInput);
        g.MatMul(normed, Projection(g, "router", w.Router, c.NumExperts, c.HiddenSize), RouterLogits);

        g.Output(Residual, DataType.Float, "seq", c.HiddenSize);
        g.Output(ExpertInput, DataType.Float, "seq", c.HiddenSize);
        g.Output(RouterLogits, DataType.Float, "seq", c.NumExperts);
        g.Output(NewKey, DataType.Float, "seq", kv, d);
        g.Output(NewValue, DataType.Float, "seq", kv, d);
        return g;
    }

    internal static GraphBuilder BuildExpert(MoeConfig c, ExpertWeights w, TensorDtype dtype)
    {
        var g = new GraphBuilder(ExpertGraph, dtype);
        g.Input(ExpertX, DataType.Float, "rows", c.HiddenSize);
        var gate = g.MatMul(ExpertX, Projection(g, "w1", w.W1, c.IntermediateSize, c.HiddenSize));
        var up = g.MatMul(ExpertX, Projection(g, "w3", w.W3, c.IntermediateSize, c.HiddenSize));
        var silu = g.Mul(gate, g.Node("Sigmoid", [gate]));
        g.MatMul(g.Mul(silu, up), Projection(g, "w2", w.W2, c.HiddenSize, c.IntermediateSize), ExpertY);
        g.Output(ExpertY, DataType.Float, "rows", c.HiddenSize);
        return g;
    }

    internal static GraphBuilder BuildHead(MoeConfig c, float[] norm, float[] lmHead, TensorDtype dtype)
    {
        var g = new GraphBuilder(HeadGraph, dtype);
        g.Input(Hidden, DataType.Float, "seq", c.HiddenSize);
        var normed = g.RmsNorm(Hidden, g.Weight("norm", norm, c.HiddenSize), c.RmsNormEps);
        g.MatMul(normed, Projection(g, "lm_head", lmHead, c.VocabSize, c.HiddenSize), Logits);
        g.Output(Logits, DataType.Float, "seq", c.VocabSize);
        return g;
    }

    /// <summary>Stores a checkpoint projection [out, in] transposed, so the graph computes x · W as MatMul(x, Wᵀ).</summary>
    private static string Projection(GraphBuilder g, string name, float[] w, int outputs, int inputs)
    {
        var t = new float[w.Length];
        for (var o = 0; o < outputs; o++)
        {
            for (var i = 0; i < inputs; i++)
            {
                t[(i * outputs) + o] = w[(o * inputs) + i];
            }
        }

        return g.Weight(name, t, inputs, outputs);
    }

    /// <summary>[seq, heads·d] → [heads, seq, d].</summary>
    private static string HeadsFirst(GraphBuilder g, string x, long heads, long d) => g.Transpose(g.Reshape(x, 0, heads, d), 1, 0, 2);

    /// <summary>x·cos + rotate_half(x)·sin with rotate_half(x) = [-x₂, x₁].</summary>
    private static string Rope(GraphBuilder g, string x, string cos, string sin, long d)
    {
        var first = g.Slice(x, 0, d / 2, 2);
        var second = g.Slice(x, d / 2, d, 2);
        var rotated = g.Concat(2, null, g.Node("Neg", [second]), first);
        return g.Add(g.Mul(x, cos), g.Mul(rotated, sin));
    }

    private static ModelFile Save(string directory, string file, GraphBuilder graph)
    {
        var path = Path.Combine(directory, file);
        using (var stream = File.Create(path))
        {
            graph.ToModel().WriteTo(stream);
        }

        return new ModelFile(file, ModelManifest.Sha256Of(path), new FileInfo(path).Length, graph.WeightBytes);
    }

    private static string Name(FormattableString name) => name.ToString(CultureInfo.InvariantCulture);
}
