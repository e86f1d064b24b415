namespace DanceMoE.Placement;

/// <summary>
/// Shape and sizes of a Mixture-of-Experts model as far as placement cares.
/// <see cref="ExpertBytes"/> holds one size per (layer, expert), row-major by layer; <see cref="HiddenBytes"/> is one
/// token's hidden-state row as the bus carries it (the edges send float32 rows), both to a peer and back per expert.
/// </summary>
public sealed record MoeModel(int Layers, int Experts, int TopK, long[] ExpertBytes, long HiddenBytes)
{
    /// <summary>Bytes per weight; with 2 (bf16) one token costs 2 FLOPs per weight, i.e. one FLOP per byte.</summary>
    public int BytesPerParameter { get; init; } = 2;

    public long Bytes(int layer, int expert) => ExpertBytes[(layer * Experts) + expert];

    public double FlopsPerToken(int layer, int expert) => 2.0 * Bytes(layer, expert) / BytesPerParameter;

    public int ExpertCount => Layers * Experts;

    public long TotalExpertBytes => ExpertBytes.Sum();

    public long MaxExpertBytes => ExpertBytes.Max();

    public bool EqualSizes => ExpertBytes.All(b => b == ExpertBytes[0]);

    public static MoeModel Uniform(int layers, int experts, int topK, long expertBytes, long hiddenBytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(layers);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(experts);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(topK);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(topK, experts);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(expertBytes);
        return new MoeModel(layers, experts, topK, Enumerable.Repeat(expertBytes, layers * experts).ToArray(), hiddenBytes);
    }

    /// <summary>DeepSeek-V2-Lite: 26 MoE layers x 64 routed experts, top-6; expert 3 x 2048 x 1408 bf16; a hidden row of 2048 float32 on the bus.</summary>
    public static MoeModel DeepSeekV2Lite { get; } = Uniform(26, 64, 6, 3L * 2048 * 1408 * 2, 2048 * sizeof(float));
}
