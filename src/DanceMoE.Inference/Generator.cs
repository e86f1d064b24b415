using System.Diagnostics;
using DanceMoE.Model;

namespace DanceMoE.Inference;

/// <summary>
/// One request alone: prefill the prompt, then decode one token at a time with the KV cache, all for the request of
/// one <see cref="ForwardContext"/>. This is the monolithic oracle that batched serving must match.
/// </summary>
public static class Generator
{
    /// <summary>Generates up to <paramref name="maxTokens"/> tokens; <paramref name="tokenProduced"/> hears of each (index, time since the previous one).</summary>
    public static async Task<GenerationResult> GenerateAsync(
        MoeForward forward, ByteTokenizer tokenizer, IReadOnlyList<int> promptIds, int maxTokens, SamplingOptions sampling, ForwardContext context, CancellationToken cancellationToken,
        Action<int, TimeSpan>? tokenProduced = null)
    {
        ArgumentNullException.ThrowIfNull(forward);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(promptIds);
        ArgumentNullException.ThrowIfNull(context);
        var vocab = forward.Manifest.Architecture.VocabSize;
        var sampler = new Sampler(sampling);
        using var state = forward.NewState(Math.Min(forward.Manifest.Architecture.MaxPositions, promptIds.Count + maxTokens));
        var generated = new List<int>(maxTokens);
        var stopwatch = Stopwatch.StartNew();
        var previous = TimeSpan.Zero;
        var logits = await forward.ForwardAsync(promptIds, state, context, cancellationToken).ConfigureAwait(false);
        var last = logits.AsMemory((promptIds.Count - 1) * vocab, vocab);
        var eos = false;
        while (generated.Count < maxTokens)
        {
            var next = sampler.Next(last.Span);
            if (next == tokenizer.EosTokenId)
            {
                eos = true;
                break;
            }

            generated.Add(next);
            // Time since the previous token, or since the start for the first: time to first token, then per output token.
            if (tokenProduced is not null)
            {
                var now = stopwatch.Elapsed;
                tokenProduced(generated.Count - 1, now - previous);
                previous = now;
            }

            if (generated.Count == maxTokens)
            {
                break;
            }

            last = await forward.ForwardAsync([next], state, context, cancellationToken).ConfigureAwait(false);
        }

        var seconds = stopwatch.Elapsed.TotalSeconds;
        return new GenerationResult(promptIds, generated, tokenizer.Decode(generated), seconds,
            seconds > 0 ? generated.Count / seconds : 0, eos);
    }
}
