using DanceMoE.Model.Reference;

namespace DanceMoE.Inference;

public sealed record VerifyStep(string Phase, int Tokens, double MaxAbsDiff);

public sealed record VerifyResult(IReadOnlyList<VerifyStep> Steps)
{
    public double MaxAbsDiff => Steps.Max(s => s.MaxAbsDiff);
}

/// <summary>
/// Runs a prompt through prefill and decode steps in ONNX Runtime and in the C# reference, comparing logits: alone, and
/// as two sequences sharing each step (the step runs the dense steps' graphs where the export has them).
/// </summary>
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
        using var first = forward.NewState();
        using var second = forward.NewState();
        var cache = reference.NewCache();
        var steps = new List<VerifyStep>();
        var context = new ForwardContext();
        var tokens = prompt.ToArray();
        for (var step = 0; step <= decodeSteps; step++)
        {
            var expected = reference.Forward(tokens, cache);
            var actual = await forward.ForwardAsync(tokens, state, context, cancellationToken).ConfigureAwait(false);
            var phase = step == 0 ? "prefill" : "decode";
            steps.Add(new VerifyStep(phase, tokens.Length, MaxAbsDiff(expected, actual)));
            var pair = await forward.StepAsync([new SequenceChunk(tokens, first, context), new SequenceChunk(tokens, second, context)], cancellationToken).ConfigureAwait(false);
            steps.Add(new VerifyStep(phase + " x2", tokens.Length, pair.Max(r => MaxAbsDiff(expected, r.Logits ?? throw r.Error!))));
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
