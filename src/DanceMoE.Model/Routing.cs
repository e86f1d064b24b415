namespace DanceMoE.Model;

public readonly record struct ExpertChoice(int Expert, float Weight);

/// <summary>
/// The routers of the supported families: softmax over all experts, the top k (DeepSeek-V2's group_limited_greedy
/// first keeps the best groups), then renormalised to sum to one when the config says so (Mixtral always), otherwise
/// times DeepSeek-V2's routed_scaling_factor.
/// </summary>
public static class Routing
{
    /// <summary>Mixtral's router.</summary>
    public static ExpertChoice[] TopK(ReadOnlySpan<float> logits, int k) => Choose(logits, k, normalize: true, scale: 1, groups: 1, topGroups: 1);

    public static ExpertChoice[] Choose(MoeConfig c, ReadOnlySpan<float> logits)
    {
        ArgumentNullException.ThrowIfNull(c);

        // DeepSeek-V2 renormalises only with more than one expert, and scales only what it does not renormalise.
        var normalize = c.NormTopKProb && (c.ModelType != MoeConfig.DeepseekV2 || c.TopK > 1);
        var scale = c.ModelType == MoeConfig.DeepseekV2 && !normalize ? c.RoutedScalingFactor : 1;
        return Choose(logits, c.TopK, normalize, scale, c.NumGroups, c.TopKGroup);
    }

    private static ExpertChoice[] Choose(ReadOnlySpan<float> logits, int k, bool normalize, double scale, int groups, int topGroups)
    {
        if (k <= 0 || k > logits.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(k), $"top-k {k} with {logits.Length} experts");
        }

        var max = double.NegativeInfinity;
        foreach (var l in logits)
        {
            max = Math.Max(max, l);
        }

        var probs = new double[logits.Length];
        var sum = 0.0;
        for (var i = 0; i < logits.Length; i++)
        {
            probs[i] = Math.Exp(logits[i] - max);
            sum += probs[i];
        }

        for (var i = 0; i < probs.Length; i++)
        {
            probs[i] /= sum;
        }

        var candidates = Enumerable.Range(0, logits.Length);
        if (groups > 1)
        {
            var size = logits.Length / groups;
            var kept = Enumerable.Range(0, groups)
                .OrderByDescending(g => Enumerable.Range(g * size, size).Max(i => probs[i])).ThenBy(g => g)
                .Take(topGroups).ToHashSet();
            candidates = candidates.Where(i => kept.Contains(i / size));
        }

        // Ties go to the lower expert index, so every implementation picks the same experts.
        var order = candidates.OrderByDescending(i => probs[i]).ThenBy(i => i).Take(k).ToArray();
        var chosen = order.Sum(i => probs[i]);
        return [.. order.Select(i => new ExpertChoice(i, (float)(normalize ? probs[i] / chosen : probs[i] * scale)))];
    }
}
