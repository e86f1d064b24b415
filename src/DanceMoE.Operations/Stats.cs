namespace DanceMoE.Operations;

/// <summary>Order statistics for benchmark samples: these machines are noisy, so medians and tails, not means.</summary>
public static class Stats
{
    public static double Percentile(IReadOnlyCollection<double> samples, double p)
    {
        ArgumentNullException.ThrowIfNull(samples);
        if (samples.Count == 0)
        {
            return double.NaN;
        }

        var sorted = samples.Order().ToArray();
        var rank = p / 100.0 * (sorted.Length - 1);
        var low = (int)Math.Floor(rank);
        var high = (int)Math.Ceiling(rank);
        return sorted[low] + ((sorted[high] - sorted[low]) * (rank - low));
    }

    public static double Median(IReadOnlyCollection<double> samples) => Percentile(samples, 50);
}
