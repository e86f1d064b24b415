namespace DanceMoE.Model;

/// <summary>One SwiGLU expert: w1 (gate) and w3 (up) are [ffn, hidden], w2 (down) is [hidden, ffn], row-major.</summary>
public sealed record ExpertWeights(float[] W1, float[] W2, float[] W3);

/// <summary>One decoder layer; projections are [out, in] row-major as in the checkpoint.</summary>
public sealed record LayerWeights(
    float[] InputNorm,
    float[] Wq,
    float[] Wk,
    float[] Wv,
    float[] Wo,
    float[] PostNorm,
    float[] Router,
    IReadOnlyList<ExpertWeights> Experts);

/// <summary>All weights of a Mixtral-layout checkpoint as float32, shapes checked.</summary>
public sealed record MoeWeights(MoeConfig Config, float[] Embed, IReadOnlyList<LayerWeights> Layers, float[] FinalNorm, float[] LmHead)
{
    public static MoeWeights Load(Checkpoint checkpoint)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        var c = checkpoint.Config;
        var layers = Enumerable.Range(0, c.NumLayers).Select(l => LoadLayer(checkpoint, l)).ToList();
        var embed = checkpoint.Read(MixtralNames.Embed, c.VocabSize, c.HiddenSize);
        var head = c.TieWordEmbeddings && !checkpoint.Has(MixtralNames.LmHead)
            ? embed
            : checkpoint.Read(MixtralNames.LmHead, c.VocabSize, c.HiddenSize);
        return new MoeWeights(c, embed, layers, checkpoint.Read(MixtralNames.FinalNorm, c.HiddenSize), head);
    }

    /// <summary>Loads one layer; without experts when they are read one at a time (exporting large checkpoints).</summary>
    public static LayerWeights LoadLayer(Checkpoint checkpoint, int layer, bool withExperts = true)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        var c = checkpoint.Config;
        var experts = withExperts ? Enumerable.Range(0, c.NumExperts).Select(e => LoadExpert(checkpoint, layer, e)).ToList() : [];
        return new LayerWeights(
            checkpoint.Read(MixtralNames.InputNorm(layer), c.HiddenSize),
            checkpoint.Read(MixtralNames.Attention(layer, 'q'), c.QueryWidth, c.HiddenSize),
            checkpoint.Read(MixtralNames.Attention(layer, 'k'), c.KvWidth, c.HiddenSize),
            checkpoint.Read(MixtralNames.Attention(layer, 'v'), c.KvWidth, c.HiddenSize),
            checkpoint.Read(MixtralNames.Attention(layer, 'o'), c.HiddenSize, c.QueryWidth),
            checkpoint.Read(MixtralNames.PostNorm(layer), c.HiddenSize),
            checkpoint.Read(MixtralNames.Router(layer), c.NumExperts, c.HiddenSize),
            experts);
    }

    public static ExpertWeights LoadExpert(Checkpoint checkpoint, int layer, int expert)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        var c = checkpoint.Config;
        return new ExpertWeights(
            checkpoint.Read(MixtralNames.Expert(layer, expert, 1), c.IntermediateSize, c.HiddenSize),
            checkpoint.Read(MixtralNames.Expert(layer, expert, 2), c.HiddenSize, c.IntermediateSize),
            checkpoint.Read(MixtralNames.Expert(layer, expert, 3), c.IntermediateSize, c.HiddenSize));
    }
}
