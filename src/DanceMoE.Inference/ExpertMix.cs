namespace DanceMoE.Inference;

/// <summary>
/// The one way a token's experts are mixed: Σ weight · output added from zero in expert order, then added to the
/// residual. The origin and a peer that sums a token's experts both use it, so their rows are bit-identical.
/// </summary>
public static class ExpertMix
{
    /// <summary><paramref name="sum"/> += <paramref name="weight"/> · <paramref name="output"/>, element by element.</summary>
    public static void AddWeighted(Span<float> sum, float weight, ReadOnlySpan<float> output)
    {
        if (sum.Length != output.Length)
        {
            throw new ArgumentException($"a sum of {sum.Length} floats and an expert output of {output.Length}", nameof(output));
        }

        for (var j = 0; j < sum.Length; j++)
        {
            sum[j] += weight * output[j];
        }
    }
}
