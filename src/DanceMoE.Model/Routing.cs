namespace DanceMoE.Model;

public readonly record struct ExpertChoice(int Expert, float Weight);

/// <summary>Mixtral's router: softmax over all experts, the top k, their weights renormalised to sum to one.</summary>
public static class Routing
{
    public static ExpertChoice[] TopK(ReadOnlySpan<float> logits, int k)
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

        // Ties go to the lower expert index, so every implementation picks the same experts.
        var order = Enumerable.Range(0, logits.Length).OrderByDescending(i => probs[i]).ThenBy(i => i).Take(k).ToArray();
        var chosen = order.Sum(i => probs[i] / sum);
        return [.. order.Select(i => new ExpertChoice(i, (float)(probs[i] / sum / chosen)))];
    }
}
