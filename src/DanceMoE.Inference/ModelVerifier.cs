using DanceMoE.Model.Reference;

namespace DanceMoE.Inference;

public sealed record VerifyStep(string Phase, int Tokens, double MaxAbsDiff);

public sealed record VerifyResult(IReadOnlyList<VerifyStep> Steps)
{
    public double MaxAbsDiff => Steps.Max(s => s.MaxAbsDiff);
}

/// <summary>Runs a prompt through prefill and decode steps in ONNX Runtime and in the C# reference, comparing logits.</summary>
public static class ModelVerifier
{
    public static async Task<VerifyResult> VerifyAsync(
        MoeForward forward, ReferenceModel reference, IReadOnlyList<int> prompt, int decodeSteps, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(forward);
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentNullException.ThrowIfNull(prompt);
        var vocab = reference.Config.VocabSize;
        using var state = forward.NewState();
        var cache = reference.NewCache();
        var steps = new List<VerifyStep>();
        var context = new ForwardContext();
        var tokens = prompt.ToArray();
        for (var step = 0; step <= decodeSteps; step++)
        {
            var expected = reference.Forward(tokens, cache);
            var actual = await forward.ForwardAsync(tokens, state, context, cancellationToken).ConfigureAwait(false);
            steps.Add(new VerifyStep(step == 0 ? "prefill" : "decode", tokens.Length, MaxAbsDiff(expected, actual)));
            tokens = [Sampler.ArgMax(expected.AsSpan(expected.Length - vocab, vocab))];
        }

        return new VerifyResult(steps);
    }

    public static double MaxAbsDiff(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        if (a.Length != b.Length)
        {
            throw new ArgumentException($"logit counts differ: {a.Length} vs {b.Length}", nameof(b));
        }

        var max = 0.0;
        for (var i = 0; i < a.Length; i++)
        {
            var diff = Math.Abs((double)a[i] - b[i]);
            max = double.IsNaN(diff) ? double.PositiveInfinity : Math.Max(max, diff);
        }

        return max;
    }
}
