using DanceMoE.Model;

namespace DanceMoE.Inference;

public sealed class Sampler(SamplingOptions options)
{
    private readonly SplitMix64 _random = new(options.Seed);

    public SamplingOptions Options { get; } = options;

    public int Next(ReadOnlySpan<float> logits)
    {
        // Minus infinity only rules a token out; NaN, plus infinity or nothing finite would all read as token 0.
        var anyFinite = false;
        foreach (var l in logits)
        {
            if (float.IsNaN(l) || float.IsPositiveInfinity(l))
            {
                throw new NonFiniteLogitsException();
            }

            anyFinite |= float.IsFinite(l);
        }

        if (!anyFinite)
        {
            throw new NonFiniteLogitsException();
        }

        if (Options.Temperature <= 0)
        {
            return ArgMax(logits);
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
            probs[i] = Math.Exp((logits[i] - max) / Options.Temperature);
            sum += probs[i];
        }

        var order = Enumerable.Range(0, probs.Length).OrderByDescending(i => probs[i]).ThenBy(i => i).ToArray();
        var kept = new List<int>();
        var mass = 0.0;
        foreach (var i in order)
        {
            kept.Add(i);
            mass += probs[i] / sum;
            if (mass >= Options.TopP)
            {
                break;
            }
        }

        var draw = _random.NextDouble() * kept.Sum(i => probs[i]);
        foreach (var i in kept)
        {
            draw -= probs[i];
            if (draw <= 0)
            {
                return i;
            }
        }

        return kept[^1];
    }

    /// <summary>The highest logit; ties go to the lowest id.</summary>
    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        var best = 0;
        for (var i = 1; i < logits.Length; i++)
        {
            if (logits[i] > logits[best])
            {
                best = i;
            }
        }

        return best;
    }
}
