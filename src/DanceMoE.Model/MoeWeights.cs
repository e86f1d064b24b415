namespace DanceMoE.Model;

/// <summary>One SwiGLU MLP: w1 (gate) and w3 (up) are [ffn, hidden], w2 (down) is [hidden, ffn], row-major.</summary>
public sealed record ExpertWeights(float[] W1, float[] W2, float[] W3);

/// <summary>
/// Attention projections, [out, in] row-major as in the checkpoint. Standard attention uses Wq, Wk, Wv (with biases
/// for Qwen2-MoE, q/k norms for OLMoE); MLA uses Wq or QA/QANorm/QB, and KvA, KvANorm, KvB.
/// </summary>
public sealed record AttentionWeights
{
    public required float[] Wo { get; init; }
    public float[]? Wq { get; init; }
    public float[]? Wk { get; init; }
    public float[]? Wv { get; init; }
    public float[]? QBias { get; init; }
    public float[]? KBias { get; init; }
    public float[]? VBias { get; init; }
    public float[]? QNorm { get; init; }
    public float[]? KNorm { get; init; }
    public float[]? QA { get; init; }
    public float[]? QANorm { get; init; }
    public float[]? QB { get; init; }
    public float[]? KvA { get; init; }
    public float[]? KvANorm { get; init; }
    public float[]? KvB { get; init; }
}

/// <summary>
/// One decoder layer: a dense layer has <see cref="DenseMlp"/>; an MoE layer has a router, its routed experts (empty
/// when they are read one at a time) and maybe a shared expert with its gate.
/// </summary>
public sealed record LayerWeights
{
    public required float[] InputNorm { get; init; }
    public required AttentionWeights Attention { get; init; }
    public required float[] PostNorm { get; init; }
    public ExpertWeights? DenseMlp { get; init; }
    public float[]? Router { get; init; }
    public IReadOnlyList<ExpertWeights> Experts { get; init; } = [];
    public ExpertWeights? Shared { get; init; }
    public float[]? SharedGate { get; init; }
}

/// <summary>All weights of a checkpoint as float32, shapes checked against the config.</summary>
public sealed record MoeWeights(MoeConfig Config, float[] Embed, IReadOnlyList<LayerWeights> Layers, float[] FinalNorm, float[] LmHead)
{
    public static MoeWeights Load(Checkpoint checkpoint, bool withExperts = true)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        var c = checkpoint.Config;
        var layers = Enumerable.Range(0, c.NumLayers).Select(l => LoadLayer(checkpoint, l, withExperts)).ToList();
        var embed = checkpoint.Read(TensorNames.Embed, c.VocabSize, c.HiddenSize);
        var head = c.TieWordEmbeddings && !checkpoint.Has(TensorNames.LmHead)
            ? embed
            : checkpoint.Read(TensorNames.LmHead, c.VocabSize, c.HiddenSize);
        return new MoeWeights(c, embed, layers, checkpoint.Read(TensorNames.FinalNorm, c.HiddenSize), head);
    }

    /// <summary>Loads one decoder layer; without routed experts when they are read one at a time (exporting large checkpoints).</summary>
    public static LayerWeights LoadLayer(Checkpoint checkpoint, int layer, bool withExperts = true)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        var c = checkpoint.Config;
        var names = new TensorNames(c);
        var h = c.HiddenSize;
        var weights = new LayerWeights
        {
            InputNorm = checkpoint.Read(TensorNames.InputNorm(layer), h),
            Attention = LoadAttention(checkpoint, layer),
            PostNorm = checkpoint.Read(TensorNames.PostNorm(layer), h),
        };
        if (c.IsDenseLayer(layer))
        {
            return weights with { DenseMlp = LoadMlp(checkpoint, p => TensorNames.DenseMlp(layer, p), c.DenseIntermediateSize) };
        }

        IReadOnlyList<ExpertWeights> experts = withExperts ? [.. Enumerable.Range(0, c.NumExperts).Select(e => LoadExpert(checkpoint, layer, e))] : [];
        return weights with
        {
            Router = checkpoint.Read(names.Router(layer), c.NumExperts, h),
            Experts = experts,
            Shared = c.SharedIntermediateSize > 0 ? LoadMlp(checkpoint, p => names.Shared(layer, p), c.SharedIntermediateSize) : null,
            SharedGate = c.SharedIntermediateSize > 0 && c.SharedExpertGate ? checkpoint.Read(TensorNames.SharedGate(layer), 1, h) : null,
        };
    }

    public static ExpertWeights LoadExpert(Checkpoint checkpoint, int layer, int expert)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        var names = new TensorNames(checkpoint.Config);
        return LoadMlp(checkpoint, p => names.Expert(layer, expert, p), checkpoint.Config.IntermediateSize);
    }

    private static ExpertWeights LoadMlp(Checkpoint checkpoint, Func<string, string> name, int ffn)
    {
        var h = checkpoint.Config.HiddenSize;
        return new ExpertWeights(
            checkpoint.Read(name("gate"), ffn, h),
            checkpoint.Read(name("down"), h, ffn),
            checkpoint.Read(name("up"), ffn, h));
    }

    private static AttentionWeights LoadAttention(Checkpoint checkpoint, int layer)
    {
        var c = checkpoint.Config;
        var h = c.HiddenSize;
        float[] Read(string part, params long[] shape) => checkpoint.Read(TensorNames.Attention(layer, part), shape);
        float[]? Bias(string part, int width) => c.QkvBias ? checkpoint.Read(TensorNames.Attention(layer, part, "bias"), width) : null;
        if (c.Mla is { } mla)
        {
            var q = mla.QLoraRank;
            return new AttentionWeights
            {
                Wq = q is null ? Read("q_proj", c.QueryWidth, h) : null,
                QA = q is { } qa ? Read("q_a_proj", qa, h) : null,
                QANorm = q is { } qn ? Read("q_a_layernorm", qn) : null,
                QB = q is { } qb ? Read("q_b_proj", c.QueryWidth, qb) : null,
                KvA = Read("kv_a_proj_with_mqa", mla.KvLoraRank + mla.QkRopeHeadDim, h),
                KvANorm = Read("kv_a_layernorm", mla.KvLoraRank),
                KvB = Read("kv_b_proj", c.NumHeads * (mla.QkNopeHeadDim + mla.VHeadDim), mla.KvLoraRank),
                Wo = Read("o_proj", h, c.NumHeads * mla.VHeadDim),
            };
        }

        return new AttentionWeights
        {
            Wq = Read("q_proj", c.QueryWidth, h),
            Wk = Read("k_proj", c.KvWidth, h),
            Wv = Read("v_proj", c.KvWidth, h),
            Wo = Read("o_proj", h, c.QueryWidth),
            QBias = Bias("q_proj", c.QueryWidth),
            KBias = Bias("k_proj", c.KvWidth),
            VBias = Bias("v_proj", c.KvWidth),
            QNorm = c.QkNorm ? Read("q_norm", c.QueryWidth) : null,
            KNorm = c.QkNorm ? Read("k_norm", c.KvWidth) : null,
        };
    }
}
