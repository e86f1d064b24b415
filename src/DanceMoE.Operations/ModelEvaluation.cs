using DanceMoE.Inference;
using DanceMoE.Model;
using DanceMoE.Model.Locality;

namespace DanceMoE.Operations;

/// <summary>One domain's held-out bits per byte through the exported model.</summary>
public sealed record DomainBits(string Domain, long Bytes, double BitsPerByte);

/// <summary>Held-out bits per byte: over all bytes of all domains, and per domain.</summary>
public sealed record ModelEvaluationResult(double BitsPerByte, IReadOnlyList<DomainBits> Domains, string? Provider);

/// <summary>
/// <c>dancemoe model eval</c>: the held-out samples of an exported model (<c>heldout/*.txt</c>, copied there by the
/// export) through our runtime, every expert local, in windows of <c>max_position_embeddings</c> bytes each run from
/// BOS alone, as the training program and the C# reference (<see cref="HeldOutTrace"/>) measure them; bits per byte =
/// total -log2 p(byte) / bytes.
/// </summary>
public static class ModelEvaluation
{
    public static async Task<ModelEvaluationResult> RunAsync(
        ModelManifest manifest, int maxBytesPerDomain, InferenceOptions options, Action<string> log, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        ArgumentNullException.ThrowIfNull(log);
        if (manifest.Tokenizer is not { Kind: ByteTokenizer.Kind } info)
        {
            throw new OperationException($"{manifest.Directory}: the model has no byte-level tokenizer; only byte-level tokenizers are supported so far");
        }

        IReadOnlyList<string> domains;
        try
        {
            domains = HeldOutTrace.Domains(manifest.Directory);
        }
        catch (ModelFormatException ex)
        {
            throw new OperationException($"{ex.Message} (export the model from a checkpoint that has them, or add heldout/DOMAIN.txt)", OperationFailure.Failed, ex);
        }

        var c = manifest.Architecture;
        var factory = new SessionFactory(options, log);
        try
        {
            using var pool = new ExpertSessionPool(manifest, factory);
            pool.LoadAll();
            using var forward = new MoeForward(manifest, factory, new LocalExpertDispatcher(pool));
            var results = new List<DomainBits>();
            var context = new ForwardContext();
            foreach (var domain in domains)
            {
                var text = HeldOutTrace.Sample(manifest.Directory, domain, maxBytesPerDomain);
                var bits = 0.0;
                for (var start = 0; start < text.Length; start += c.MaxPositions)
                {
                    var n = Math.Min(c.MaxPositions, text.Length - start);
                    var tokens = new int[n];
                    tokens[0] = info.BosTokenId;
                    for (var i = 1; i < n; i++)
                    {
                        tokens[i] = text[start + i - 1];
                    }

                    var logits = await forward.ForwardAsync(tokens, forward.NewState(n), context, cancellationToken).ConfigureAwait(false);
                    for (var i = 0; i < n; i++)
                    {
                        bits -= HeldOutTrace.LogSoftmax(logits.AsSpan(i * c.VocabSize, c.VocabSize), text[start + i]) / Math.Log(2);
                    }
                }

                results.Add(new DomainBits(domain, text.Length, text.Length == 0 ? 0 : bits / text.Length));
                log($"{domain}: {text.Length} bytes, {results[^1].BitsPerByte:F4} bits/byte");
            }

            var bytes = results.Sum(r => r.Bytes);
            return new ModelEvaluationResult(bytes == 0 ? 0 : results.Sum(r => r.BitsPerByte * r.Bytes) / bytes, results, factory.ProviderInUse);
        }
        catch (Exception ex) when (OnnxRuntimeFailures.Translate(ex) is { } failure)
        {
            throw failure;
        }
    }
}
