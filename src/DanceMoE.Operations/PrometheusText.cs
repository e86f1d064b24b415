using System.Globalization;

namespace DanceMoE.Operations;

/// <summary>One sample of a Prometheus text exposition: metric name, labels, value.</summary>
public sealed record PrometheusSample(string Name, IReadOnlyDictionary<string, string> Labels, double Value)
{
    public string? Label(string name) => Labels.TryGetValue(name, out var v) ? v : null;
}

/// <summary>Parses the Prometheus text format 0.0.4 into samples; comments, blank and malformed lines are skipped.</summary>
public static class PrometheusText
{
    public static IReadOnlyList<PrometheusSample> Parse(string text)
    {
        var samples = new List<PrometheusSample>();
        foreach (var raw in text.Split('\n'))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line[0] == '#')
            {
                continue;
            }

            if (TryParseLine(line, out var sample))
            {
                samples.Add(sample);
            }
        }

        return samples;
    }

    private static bool TryParseLine(string line, out PrometheusSample sample)
    {
        sample = null!;
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        var i = 0;
        while (i < line.Length && line[i] != '{' && line[i] != ' ' && line[i] != '\t')
        {
            i++;
        }

        var name = line[..i];
        if (name.Length == 0)
        {
            return false;
        }

        if (i < line.Length && line[i] == '{')
        {
            i++;
            while (true)
            {
                while (i < line.Length && (line[i] == ' ' || line[i] == ','))
                {
                    i++;
                }

                if (i >= line.Length)
                {
                    return false;
                }

                if (line[i] == '}')
                {
                    i++;
                    break;
                }

                var eq = line.IndexOf('=', i);
                if (eq < 0 || eq + 1 >= line.Length || line[eq + 1] != '"')
                {
                    return false;
                }

                var key = line[i..eq].Trim();
                var value = new System.Text.StringBuilder();
                i = eq + 2;
                while (i < line.Length && line[i] != '"')
                {
                    if (line[i] == '\\' && i + 1 < line.Length)
                    {
                        i++;
                        value.Append(line[i] == 'n' ? '\n' : line[i]);
                    }
                    else
                    {
                        value.Append(line[i]);
                    }

                    i++;
                }

                if (i >= line.Length)
                {
                    return false;
                }

                i++;
                labels[key] = value.ToString();
            }
        }

        var rest = line[i..].Trim().Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
        if (rest.Length == 0 || !TryParseValue(rest[0], out var v))
        {
            return false;
        }

        sample = new PrometheusSample(name, labels, v);
        return true;
    }

    private static bool TryParseValue(string text, out double value)
    {
        switch (text)
        {
            case "+Inf":
                value = double.PositiveInfinity;
                return true;
            case "-Inf":
                value = double.NegativeInfinity;
                return true;
            case "NaN":
                value = double.NaN;
                return true;
            default:
                return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out value);
        }
    }

    /// <summary>Sum of the samples named <paramref name="name"/> that carry every label in <paramref name="match"/>; null when none.</summary>
    public static double? Sum(IEnumerable<PrometheusSample> samples, string name, params (string Key, string Value)[] match)
    {
        double? total = null;
        foreach (var s in samples)
        {
            if (s.Name == name && match.All(m => s.Label(m.Key) == m.Value))
            {
                total = (total ?? 0) + s.Value;
            }
        }

        return total;
    }

    /// <summary>Sums of the samples named <paramref name="name"/> per value of their label <paramref name="label"/> (samples without it left out).</summary>
    public static Dictionary<string, double> SumBy(IEnumerable<PrometheusSample> samples, string name, string label)
    {
        var totals = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var s in samples)
        {
            if (s.Name == name && s.Label(label) is { } value)
            {
                totals[value] = totals.GetValueOrDefault(value) + s.Value;
            }
        }

        return totals;
    }

    /// <summary>
    /// The <paramref name="quantile"/> of a histogram from its cumulative <c>_bucket</c> samples, interpolated linearly within
    /// the bucket as Prometheus' histogram_quantile does; null without observations. Past the last finite bound: that bound.
    /// </summary>
    public static double? HistogramQuantile(IEnumerable<PrometheusSample> samples, string name, double quantile)
    {
        var buckets = samples
            .Where(s => s.Name == name + "_bucket" && s.Label("le") is not null)
            .Select(s => (Le: ParseLe(s.Label("le")!), Count: s.Value))
            .Where(b => !double.IsNaN(b.Le))
            .GroupBy(b => b.Le)
            .Select(g => (Le: g.Key, Count: g.Sum(b => b.Count)))
            .OrderBy(b => b.Le)
            .ToList();
        return HistogramQuantile(buckets, quantile);
    }

    /// <summary>The quantile of cumulative (upper bound, count) buckets, ordered by bound.</summary>
    public static double? HistogramQuantile(IReadOnlyList<(double Le, double Count)> buckets, double quantile)
    {
        if (buckets.Count == 0)
        {
            return null;
        }

        var total = buckets[^1].Count;
        if (total <= 0)
        {
            return null;
        }

        var rank = quantile * total;
        var lowerBound = 0.0;
        var lowerCount = 0.0;
        foreach (var (le, count) in buckets)
        {
            if (count >= rank)
            {
                if (double.IsPositiveInfinity(le))
                {
                    return lowerBound;
                }

                var inBucket = count - lowerCount;
                return inBucket <= 0 ? le : lowerBound + ((le - lowerBound) * (rank - lowerCount) / inBucket);
            }

            lowerBound = le;
            lowerCount = count;
        }

        return lowerBound;
    }

    private static double ParseLe(string le) => TryParseValue(le, out var v) ? v : double.NaN;
}
