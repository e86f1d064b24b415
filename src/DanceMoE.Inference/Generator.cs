using System.Diagnostics;
using DanceMoE.Model;

namespace DanceMoE.Inference;

/// <summary>Prefill the prompt, then decode one token at a time with the KV cache, all for the request of one <see cref="ForwardContext"/>.</summary>
public static class Generator
{
    public static async Task<GenerationResult> GenerateAsync(
        MoeForward forward, ByteTokenizer tokenizer, IReadOnlyList<int> promptIds, int maxTokens, SamplingOptions sampling, ForwardContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(forward);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(promptIds);
        ArgumentNullException.ThrowIfNull(context);
        var vocab = forward.Manifest.Architecture.VocabSize;
        var sampler = new Sampler(sampling);
        var state = forward.NewState();
        var generated = new List<int>(maxTokens);
        var stopwatch = Stopwatch.StartNew();
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
