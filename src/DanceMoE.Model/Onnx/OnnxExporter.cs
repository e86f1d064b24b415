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
    /// <summary>
    /// A graph with more weight bytes than this keeps them as ONNX external data in a side file (FILE.onnx.data):
    /// one protobuf message, so one .onnx file, holds at most 2 GiB.
    /// </summary>
    public const long ExternalDataAbove = 1536L << 20;

    /// <summary>
    /// Exports with <paramref name="weightDtype"/> weights; the routed experts' projections are stored as
    /// <paramref name="expertWeights"/> (default: the same as the rest).
    /// </summary>
    public static ModelManifest Export(
        Checkpoint checkpoint, string outDirectory, TensorDtype weightDtype, Action<string>? log = null, ExpertWeightFormat? expertWeights = null) =>
        Export(checkpoint, outDirectory, weightDtype, log, ExternalDataAbove, expertWeights);

    internal static ModelManifest Export(
        Checkpoint checkpoint, string outDirectory, TensorDtype weightDtype, Action<string>? log, long externalDataAbove, ExpertWeightFormat? expertWeights = null)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        if (weightDtype == TensorDtype.BF16)
        {
            throw new ArgumentException("export writes f32 or f16 weights", nameof(weightDtype));
        }

        var c = checkpoint.Config;
        var expertFormat = expertWeights ?? (weightDtype == TensorDtype.F32 ? ExpertWeightFormat.Fp32 : ExpertWeightFormat.Fp16);
        Directory.CreateDirectory(outDirectory);
        RemovePreviousExport(outDirectory, checkpoint.Directory);
        var embedWeights = checkpoint.Read(TensorNames.Embed, c.VocabSize, c.HiddenSize);
        var embedding = Save(externalDataAbove, outDirectory, "embedding.onnx", BuildEmbedding(c, embedWeights, weightDtype));
        var layers = new List<LayerFiles>();
        var groups = c.DecoderLayersOfRoutedLayers();
        for (var r = 0; r < groups.Count; r++)
        {
            var decoderLayers = groups[r].Select(l => (l, MoeWeights.LoadLayer(checkpoint, l, withExperts: false))).ToList();
            var dense = Save(externalDataAbove, outDirectory, Name($"dense.{r}.onnx"), BuildDense(c, decoderLayers, weightDtype));
            var experts = new List<ExpertFile>();
            for (var e = 0; e < c.NumExperts; e++)
            {
                var file = Save(externalDataAbove, outDirectory, Name($"expert.{r}.{e}.onnx"), BuildExpert(c, MoeWeights.LoadExpert(checkpoint, groups[r][^1], e), expertFormat));
                experts.Add(new ExpertFile(r, e, file.File, file.Sha256, file.Bytes, file.WeightBytes) { ExternalData = file.ExternalData });
            }

            DenseStepFiles? steps = null;
            if (decoderLayers.Count == 1)
            {
                var (projections, attention, output) = BuildDenseSteps(c, decoderLayers[0].Item2, weightDtype);
                steps = new DenseStepFiles(
                    Save(externalDataAbove, outDirectory, Name($"dense.{r}.projections.onnx"), projections),
                    Save(externalDataAbove, outDirectory, Name($"dense.{r}.attention.onnx"), attention),
                    Save(externalDataAbove, outDirectory, Name($"dense.{r}.output.onnx"), output));
            }

            layers.Add(new LayerFiles(r, dense, experts) { DecoderLayers = groups[r], DenseSteps = steps });
            log?.Invoke($"layer {r}: dense (decoder layers {string.Join(", ", groups[r])}) + {c.NumExperts} experts written");
        }

        var head = c.TieWordEmbeddings && !checkpoint.Has(TensorNames.LmHead)
            ? embedWeights
            : checkpoint.Read(TensorNames.LmHead, c.VocabSize, c.HiddenSize);
        var headFile = Save(externalDataAbove, outDirectory, "head.onnx", BuildHead(c, checkpoint.Read(TensorNames.FinalNorm, c.HiddenSize), head, weightDtype));
        var tokenizer = checkpoint.Tokenizer;
        var manifest = new ModelManifest
        {
            Opset = GraphBuilder.OpsetVersion,
            IrVersion = GraphBuilder.IrVersion,
            WeightDtype = weightDtype == TensorDtype.F32 ? "f32" : "f16",
            ExpertWeights = expertFormat.Name(),
            ExpertBlockSize = expertFormat.Bits() > 0 ? ExpertQuantization.BlockSize : null,
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

    /// <summary>
    /// Deletes what an earlier export into the same directory wrote (the files its manifest lists, their side files and its
    /// held-out samples), so none of it outlives the new export: side files of a re-export without them, a larger model's
    /// experts, another checkpoint's samples that <c>model eval</c> would read. Only plain file names in the directory are
    /// deleted, whatever the old manifest says; anything else in the directory stays.
    /// </summary>
    private static void RemovePreviousExport(string outDirectory, string checkpointDirectory)
    {
        var previous = ModelManifest.TryReadListing(outDirectory);
        if (previous is null)
        {
            return;
        }

        var names = previous.Files().SelectMany(f => f.ExternalData is null ? [f.File] : new[] { f.File, f.ExternalData.File });
        foreach (var name in names.Distinct(StringComparer.Ordinal))
        {
            if (name is { Length: > 0 } && Path.GetFileName(name) == name && name is not "." and not "..")
            {
                File.Delete(Path.Combine(outDirectory, name));
            }
        }

        var heldOut = Path.Combine(outDirectory, Locality.HeldOutTrace.Folder);
        if (Path.GetFullPath(checkpointDirectory) != Path.GetFullPath(outDirectory) && Directory.Exists(heldOut))
        {
            foreach (var file in Directory.GetFiles(heldOut, "*.txt"))
            {
                File.Delete(file);
            }
        }
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

        // A dense subgraph that also runs dense-MLP layers caches each of them: decoder layers x cache heads.
        var cacheHeads = c.DenseLayers.Count == 0 ? N(c.CacheHeads) : "layers_x_" + N(c.CacheHeads);
        return new Dictionary<string, GraphSignature>(StringComparer.Ordinal)
        {
            [EmbeddingGraph] = new([I(InputIds, "seq")], [F(Hidden, "seq", N(c.HiddenSize))]),
            [DenseGraph] = new(
                [
                    F(Hidden, "seq", N(c.HiddenSize)), I(PositionIds, "seq"), F(AttentionMask, "seq", "total"),
                    F(PastKey, "past", cacheHeads, N(c.KeyHeadDim)), F(PastValue, "past", cacheHeads, N(c.ValueHeadDim)),
                ],
                [
                    F(Residual, "seq", N(c.HiddenSize)), F(ExpertInput, "seq", N(c.HiddenSize)), F(RouterLogits, "seq", N(c.NumExperts)),
                    F(NewKey, "seq", cacheHeads, N(c.KeyHeadDim)), F(NewValue, "seq", cacheHeads, N(c.ValueHeadDim)),
                ]),
            [DenseProjectionsGraph] = new(
                [F(Hidden, "seq", N(c.HiddenSize)), I(PositionIds, "seq")],
                [F(Query, "seq", N(c.NumHeads), N(c.KeyHeadDim)), F(Key, "seq", N(c.CacheHeads), N(c.KeyHeadDim)), F(Value, "seq", N(c.CacheHeads), N(c.ValueHeadDim))]),
            [DenseAttentionGraph] = new(
                [
                    F(Query, "seq", N(c.NumHeads), N(c.KeyHeadDim)), F(Key, "seq", N(c.CacheHeads), N(c.KeyHeadDim)), F(Value, "seq", N(c.CacheHeads), N(c.ValueHeadDim)),
                    F(AttentionMask, "seq", "total"), F(PastKey, "past", N(c.CacheHeads), N(c.KeyHeadDim)), F(PastValue, "past", N(c.CacheHeads), N(c.ValueHeadDim)),
                ],
                [F(AttentionOutput, "seq", N(c.NumHeads * c.ValueHeadDim)), F(NewKey, "seq", N(c.CacheHeads), N(c.KeyHeadDim)), F(NewValue, "seq", N(c.CacheHeads), N(c.ValueHeadDim))]),
            [DenseOutputGraph] = new(
                [F(Hidden, "seq", N(c.HiddenSize)), F(AttentionOutput, "seq", N(c.NumHeads * c.ValueHeadDim))],
                [F(Residual, "seq", N(c.HiddenSize)), F(ExpertInput, "seq", N(c.HiddenSize)), F(RouterLogits, "seq", N(c.NumExperts))]),
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

    /// <summary>
    /// One routed layer's dense subgraph: the decoder layers it runs (dense-MLP layers first, each with its slice of the
    /// cache heads), then the MoE layer's attention, its shared expert added to the residual, the expert input and router.
    /// </summary>
    internal static GraphBuilder BuildDense(MoeConfig c, IReadOnlyList<(int Layer, LayerWeights Weights)> layers, TensorDtype dtype)
    {
        var g = new GraphBuilder(DenseGraph, dtype);
        long heads = c.CacheHeads;
        long stacked = heads * layers.Count;
        g.Input(Hidden, DataType.Float, "seq", c.HiddenSize);
        g.Input(PositionIds, DataType.Int64, "seq");
        g.Input(AttentionMask, DataType.Float, "seq", "total");
        // The KV cache is position-major, [past, heads, d], so that the runtime can append a step's rows in place
        // and hand the graph the filled prefix of a buffer allocated once.
        g.Input(PastKey, DataType.Float, "past", stacked, c.KeyHeadDim);
        g.Input(PastValue, DataType.Float, "past", stacked, c.ValueHeadDim);

        var (cos, sin) = RopeAngles(g, c);
        var hidden = Hidden;
        var newKeys = new List<string>();
        var newValues = new List<string>();
        for (var i = 0; i < layers.Count; i++)
        {
            var (layer, w) = layers[i];
            var p = layers.Count == 1 ? string.Empty : Name($"layers.{layer}.");
            var pastKey = layers.Count == 1 ? PastKey : g.Slice(PastKey, i * heads, (i + 1) * heads, 1);
            var pastValue = layers.Count == 1 ? PastValue : g.Slice(PastValue, i * heads, (i + 1) * heads, 1);
            var x = g.RmsNorm(hidden, g.Weight(p + "input_layernorm", w.InputNorm, c.HiddenSize), c.RmsNormEps);
            var (attention, newKey, newValue) = Attention(g, c, w.Attention, x, pastKey, pastValue, cos, sin, p);
            newKeys.Add(newKey);
            newValues.Add(newValue);
            var residual = g.Add(hidden, attention);
            var postNorm = g.Weight(p + "post_attention_layernorm", w.PostNorm, c.HiddenSize);
            if (w.DenseMlp is { } mlp)
            {
                hidden = g.Add(residual, SwiGlu(g, g.RmsNorm(residual, postNorm, c.RmsNormEps), mlp, c.HiddenSize, c.DenseIntermediateSize, p + "mlp."));
                continue;
            }

            MoeOutputs(g, c, w, residual, postNorm, p);
        }

        g.Concat(1, NewKey, [.. newKeys]);
        g.Concat(1, NewValue, [.. newValues]);
        g.Output(NewKey, DataType.Float, "seq", stacked, c.KeyHeadDim);
        g.Output(NewValue, DataType.Float, "seq", stacked, c.ValueHeadDim);
        return g;
    }

    /// <summary>
    /// A routed layer that runs one decoder layer, in three graphs for a step of several sequences: the projections and the
    /// output (row by row, so one run serves every sequence's rows) around the attention (one run per sequence against its
    /// own cache). The same operations as <see cref="BuildDense"/>, cut where the attention begins and ends.
    /// </summary>
    internal static (GraphBuilder Projections, GraphBuilder Attention, GraphBuilder Output) BuildDenseSteps(MoeConfig c, LayerWeights w, TensorDtype dtype)
    {
        var projections = new GraphBuilder(DenseProjectionsGraph, dtype);
        projections.Input(Hidden, DataType.Float, "seq", c.HiddenSize);
        projections.Input(PositionIds, DataType.Int64, "seq");
        var (cos, sin) = RopeAngles(projections, c);
        var x = projections.RmsNorm(Hidden, projections.Weight("input_layernorm", w.InputNorm, c.HiddenSize), c.RmsNormEps);
        var (q, k, v) = QueryKeyValue(projections, c, w.Attention, x, cos, sin, string.Empty);
        projections.Node("Transpose", [q], [GraphBuilder.Ints("perm", 1, 0, 2)], Query);
        projections.Node("Transpose", [k], [GraphBuilder.Ints("perm", 1, 0, 2)], Key);
        projections.Node("Transpose", [v], [GraphBuilder.Ints("perm", 1, 0, 2)], Value);
        projections.Output(Query, DataType.Float, "seq", c.NumHeads, c.KeyHeadDim);
        projections.Output(Key, DataType.Float, "seq", c.CacheHeads, c.KeyHeadDim);
        projections.Output(Value, DataType.Float, "seq", c.CacheHeads, c.ValueHeadDim);

        var attention = new GraphBuilder(DenseAttentionGraph, dtype);
        attention.Input(Query, DataType.Float, "seq", c.NumHeads, c.KeyHeadDim);
        attention.Input(Key, DataType.Float, "seq", c.CacheHeads, c.KeyHeadDim);
        attention.Input(Value, DataType.Float, "seq", c.CacheHeads, c.ValueHeadDim);
        attention.Input(AttentionMask, DataType.Float, "seq", "total");
        attention.Input(PastKey, DataType.Float, "past", c.CacheHeads, c.KeyHeadDim);
        attention.Input(PastValue, DataType.Float, "past", c.CacheHeads, c.ValueHeadDim);
        var (merged, newKey, newValue) = AttentionOverCache(
            attention, c, attention.Transpose(Query, 1, 0, 2), attention.Transpose(Key, 1, 0, 2), attention.Transpose(Value, 1, 0, 2), PastKey, PastValue);
        attention.Node("Identity", [merged], null, AttentionOutput);
        attention.Node("Identity", [newKey], null, NewKey);
        attention.Node("Identity", [newValue], null, NewValue);
        attention.Output(AttentionOutput, DataType.Float, "seq", c.NumHeads * c.ValueHeadDim);
        attention.Output(NewKey, DataType.Float, "seq", c.CacheHeads, c.KeyHeadDim);
        attention.Output(NewValue, DataType.Float, "seq", c.CacheHeads, c.ValueHeadDim);

        var output = new GraphBuilder(DenseOutputGraph, dtype);
        output.Input(Hidden, DataType.Float, "seq", c.HiddenSize);
        output.Input(AttentionOutput, DataType.Float, "seq", c.NumHeads * c.ValueHeadDim);
        var projected = output.MatMul(AttentionOutput, Projection(output, "o_proj", w.Attention.Wo, c.HiddenSize, c.NumHeads * c.ValueHeadDim));
        MoeOutputs(output, c, w, output.Add(Hidden, projected), output.Weight("post_attention_layernorm", w.PostNorm, c.HiddenSize), string.Empty);
        return (projections, attention, output);
    }

    /// <summary>RoPE angles from the positions: [seq, 1] · inv_freq[d/2], halves duplicated as in Hugging Face.</summary>
    private static (string Cos, string Sin) RopeAngles(GraphBuilder g, MoeConfig c)
    {
        var invFreq = Rotary.InverseFrequencies(c);
        var positions = g.Reshape(g.Node("Cast", [PositionIds], [GraphBuilder.Attr("to", (long)DataType.Float)]), -1, 1);
        var freqs = g.Mul(positions, g.Floats("inv_freq", invFreq, invFreq.Length));
        var angles = g.Concat(1, null, freqs, freqs);
        var (cos, sin) = (g.Node("Cos", [angles]), g.Node("Sin", [angles]));
        if (Rotary.CosSinScale(c) is var scale && scale != 1f)
        {
            (cos, sin) = (g.Mul(cos, g.Scalar(scale)), g.Mul(sin, g.Scalar(scale)));
        }

        return (cos, sin);
    }

    /// <summary>The MoE layer after its attention: the expert input and router logits, the shared expert added to the residual.</summary>
    private static void MoeOutputs(GraphBuilder g, MoeConfig c, LayerWeights w, string residual, string postNorm, string p)
    {
        var normed = g.RmsNorm(residual, postNorm, c.RmsNormEps, ExpertInput);
        g.MatMul(normed, Projection(g, p + "router", w.Router!, c.NumExperts, c.HiddenSize), RouterLogits);
        if (w.Shared is { } shared)
        {
            var y = SwiGlu(g, normed, shared, c.HiddenSize, c.SharedIntermediateSize, p + "shared.");
            if (w.SharedGate is { } gate)
            {
                y = g.Mul(y, g.Node("Sigmoid", [g.MatMul(normed, Projection(g, p + "shared_expert_gate", gate, 1, c.HiddenSize))]));
            }

            residual = g.Add(residual, y);
        }

        g.Node("Identity", [residual], null, Residual);
        g.Output(Residual, DataType.Float, "seq", c.HiddenSize);
        g.Output(ExpertInput, DataType.Float, "seq", c.HiddenSize);
        g.Output(RouterLogits, DataType.Float, "seq", c.NumExperts);
    }

    /// <summary>Self-attention of one decoder layer against its cache slice; returns its output and the step's keys and values [seq, heads, d].</summary>
    private static (string Output, string NewKey, string NewValue) Attention(
        GraphBuilder g, MoeConfig c, AttentionWeights w, string x, string pastKey, string pastValue, string cos, string sin, string p)
    {
        long heads = c.NumHeads;
        long dv = c.ValueHeadDim;
        var (q, k, v) = QueryKeyValue(g, c, w, x, cos, sin, p);
        var (merged, newKey, newValue) = AttentionOverCache(g, c, q, k, v, pastKey, pastValue);
        var output = g.MatMul(merged, Projection(g, p + "o_proj", w.Wo, c.HiddenSize, (int)(heads * dv)));
        return (output, newKey, newValue);
    }

    /// <summary>q, k, v [heads, seq, d] of the family's attention (multi-head latent for DeepSeek-V2, else grouped-query).</summary>
    private static (string Q, string K, string V) QueryKeyValue(GraphBuilder g, MoeConfig c, AttentionWeights w, string x, string cos, string sin, string p) =>
        c.Mla is { } mla ? Latent(g, c, mla, w, x, cos, sin, p) : Standard(g, c, w, x, cos, sin, p);

    /// <summary>
    /// q, k, v [heads, seq, d] of this step against the cache's past [past, heads, d]: the merged heads [seq, heads·dv] and
    /// the step's keys and values [seq, heads, d] for the cache.
    /// </summary>
    private static (string Merged, string NewKey, string NewValue) AttentionOverCache(
        GraphBuilder g, MoeConfig c, string q, string k, string v, string pastKey, string pastValue)
    {
        long heads = c.NumHeads;
        long kv = c.CacheHeads;
        long dk = c.KeyHeadDim;
        long dv = c.ValueHeadDim;
        var newKey = g.Transpose(k, 1, 0, 2);
        var newValue = g.Transpose(v, 1, 0, 2);
        var keys = g.Concat(1, null, g.Transpose(pastKey, 1, 0, 2), k);
        var values = g.Concat(1, null, g.Transpose(pastValue, 1, 0, 2), v);

        // Grouped-query attention: query heads [kv, group, seq, d] against shared heads [kv, 1, total, d].
        var q4 = g.Reshape(q, kv, heads / kv, -1, dk);
        var kT = g.Transpose(g.Reshape(keys, kv, 1, -1, dk), 0, 1, 3, 2);
        var scores = g.Mul(g.MatMul(q4, kT), g.Scalar(Rotary.SoftmaxScale(c)));
        var probs = g.Node("Softmax", [g.Add(scores, AttentionMask)], [GraphBuilder.Attr("axis", -1)]);
        var context = g.MatMul(probs, g.Reshape(values, kv, 1, -1, dv));
        var merged = g.Reshape(g.Transpose(g.Reshape(context, heads, -1, dv), 1, 0, 2), 0, heads * dv);
        return (merged, newKey, newValue);
    }

    /// <summary>q, k, v [heads, seq, d] of grouped-query attention, with Qwen2-MoE's biases and OLMoE's q/k norms.</summary>
    private static (string Q, string K, string V) Standard(GraphBuilder g, MoeConfig c, AttentionWeights w, string x, string cos, string sin, string p)
    {
        long d = c.HeadDim;
        string Project(string name, float[] weight, float[]? bias, float[]? norm, int width)
        {
            var y = g.MatMul(x, Projection(g, p + name, weight, width, c.HiddenSize));
            y = bias is null ? y : g.Add(y, g.Weight(p + name + ".bias", bias, width));
            return norm is null ? y : g.RmsNorm(y, g.Weight(p + name + ".norm", norm, width), c.RmsNormEps);
        }

        var q = HeadsFirst(g, Project("q_proj", w.Wq!, w.QBias, w.QNorm, c.QueryWidth), c.NumHeads, d);
        var k = HeadsFirst(g, Project("k_proj", w.Wk!, w.KBias, w.KNorm, c.KvWidth), c.NumKvHeads, d);
        var v = HeadsFirst(g, Project("v_proj", w.Wv!, w.VBias, null, c.KvWidth), c.NumKvHeads, d);
        return (Rope(g, q, cos, sin, d), Rope(g, k, cos, sin, d), v);
    }

    /// <summary>
    /// DeepSeek-V2's multi-head latent attention: full per-head keys [nope | rope] and values [heads, seq, d]. The rope
    /// rows of q and kv_a are stored de-interleaved, which is the permutation modeling_deepseek applies before RoPE.
    /// </summary>
    private static (string Q, string K, string V) Latent(GraphBuilder g, MoeConfig c, MlaConfig mla, AttentionWeights w, string x, string cos, string sin, string p)
    {
        long heads = c.NumHeads;
        var (nope, rope, dv, rank) = ((long)mla.QkNopeHeadDim, (long)mla.QkRopeHeadDim, (long)mla.VHeadDim, (long)mla.KvLoraRank);
        var dk = nope + rope;
        var qRows = DeinterleaveRope(mla.QLoraRank is null ? w.Wq! : w.QB!, (int)heads, (int)dk, (int)nope, (int)rope);
        var q = mla.QLoraRank is { } qr
            ? g.MatMul(
                g.RmsNorm(g.MatMul(x, Projection(g, p + "q_a_proj", w.QA!, qr, c.HiddenSize)), g.Weight(p + "q_a_layernorm", w.QANorm!, qr), MlaConfig.LatentNormEps),
                Projection(g, p + "q_b_proj", qRows, c.QueryWidth, qr))
            : g.MatMul(x, Projection(g, p + "q_proj", qRows, c.QueryWidth, c.HiddenSize));
        var q3 = HeadsFirst(g, q, heads, dk);
        var query = g.Concat(2, null, g.Slice(q3, 0, nope, 2), Rope(g, g.Slice(q3, nope, dk, 2), cos, sin, rope));

        var kvA = g.MatMul(x, Projection(g, p + "kv_a_proj_with_mqa", DeinterleaveRope(w.KvA!, 1, (int)(rank + rope), (int)rank, (int)rope), (int)(rank + rope), c.HiddenSize));
        var compressed = g.RmsNorm(g.Slice(kvA, 0, rank, 1), g.Weight(p + "kv_a_layernorm", w.KvANorm!, (int)rank), MlaConfig.LatentNormEps);
        var kPe = Rope(g, g.Reshape(g.Slice(kvA, rank, rank + rope, 1), 1, -1, rope), cos, sin, rope);
        var kv = HeadsFirst(g, g.MatMul(compressed, Projection(g, p + "kv_b_proj", w.KvB!, (int)(heads * (nope + dv)), (int)rank)), heads, nope + dv);
        var kNope = g.Slice(kv, 0, nope, 2);
        var shape = g.Concat(0, null, g.Node("Shape", [kNope], [GraphBuilder.Attr("end", 2)]), g.Int64s(rope));
        var key = g.Concat(2, null, kNope, g.Node("Expand", [kPe, shape]));
        return (query, key, g.Slice(kv, nope, nope + dv, 2));
    }

    /// <summary>In each of <paramref name="blocks"/> row blocks, reorders the rope rows [nope, nope + rope) as [even..., odd...].</summary>
    private static float[] DeinterleaveRope(float[] w, int blocks, int blockRows, int nope, int rope)
    {
        var columns = w.Length / (blocks * blockRows);
        var result = (float[])w.Clone();
        for (var b = 0; b < blocks; b++)
        {
            for (var i = 0; i < rope; i++)
            {
                var from = (b * blockRows) + nope + (i < rope / 2 ? 2 * i : (2 * (i - (rope / 2))) + 1);
                var to = (b * blockRows) + nope + i;
                Array.Copy(w, from * columns, result, to * columns, columns);
            }
        }

        return result;
    }

    private static string SwiGlu(GraphBuilder g, string x, ExpertWeights w, int hidden, int ffn, string p)
    {
        var gate = g.MatMul(x, Projection(g, p + "w1", w.W1, ffn, hidden));
        var up = g.MatMul(x, Projection(g, p + "w3", w.W3, ffn, hidden));
        var silu = g.Mul(gate, g.Node("Sigmoid", [gate]));
        return g.MatMul(g.Mul(silu, up), Projection(g, p + "w2", w.W2, hidden, ffn));
    }

    internal static GraphBuilder BuildExpert(MoeConfig c, ExpertWeights w, ExpertWeightFormat format)
    {
        var g = new GraphBuilder(ExpertGraph, format == ExpertWeightFormat.Fp16 ? TensorDtype.F16 : TensorDtype.F32);
        var bits = format.Bits();
        string Linear(string x, string name, float[] weights, int outputs, int inputs, string? output = null) => bits == 0
            ? g.MatMul(x, Projection(g, name, weights, outputs, inputs), output)
            : g.MatMulNBits(x, name, ExpertQuantization.Quantize(weights, outputs, inputs, bits), output);

        g.Input(ExpertX, DataType.Float, "rows", c.HiddenSize);
        var gate = Linear(ExpertX, "w1", w.W1, c.IntermediateSize, c.HiddenSize);
        var up = Linear(ExpertX, "w3", w.W3, c.IntermediateSize, c.HiddenSize);
        var silu = g.Mul(gate, g.Node("Sigmoid", [gate]));
        Linear(g.Mul(silu, up), "w2", w.W2, c.HiddenSize, c.IntermediateSize, ExpertY);
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

    /// <summary>x·cos + rotate_half(x)·sin with rotate_half(x) = [-x₂, x₁], over the last axis of width d.</summary>
    private static string Rope(GraphBuilder g, string x, string cos, string sin, long d)
    {
        var first = g.Slice(x, 0, d / 2, -1);
        var second = g.Slice(x, d / 2, d, -1);
        var rotated = g.Concat(-1, null, g.Node("Neg", [second]), first);
        return g.Add(g.Mul(x, cos), g.Mul(rotated, sin));
    }

    private static ModelFile Save(long externalDataAbove, string directory, string file, GraphBuilder graph)
    {
        var path = Path.Combine(directory, file);
        var model = graph.ToModel();
        var external = graph.WeightBytes > externalDataAbove ? ExternalData.Write(model, directory, file + ".data") : null;
        using (var stream = File.Create(path))
        {
            model.WriteTo(stream);
        }

        return new ModelFile(file, ModelManifest.Sha256Of(path), new FileInfo(path).Length, graph.WeightBytes) { ExternalData = external };
    }

    private static string Name(FormattableString name) => name.ToString(CultureInfo.InvariantCulture);
}
