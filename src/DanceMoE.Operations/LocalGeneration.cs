using DanceMoE.Inference;
using DanceMoE.Model;

namespace DanceMoE.Operations;

/// <summary>What <see cref="LocalGeneration.RunAsync"/> generated, and on which execution provider.</summary>
public sealed record LocalGenerationResult(GenerationResult Generation, string? Provider);

/// <summary>
/// Monolithic generation through the exported subgraphs, every expert local (<c>dancemoe generate</c>). With greedy
/// decoding this is the oracle the distributed runtime is compared with.
/// </summary>
public static class LocalGeneration
{
    /// <summary>Generates up to <paramref name="maxTokens"/> tokens after <paramref name="prompt"/>; ONNX Runtime's failures become <see cref="OperationException"/>s.</summary>
    public static async Task<LocalGenerationResult> RunAsync(
        ModelManifest manifest, string modelDir, string prompt, int maxTokens, SamplingOptions sampling, InferenceOptions options, Action<string> log, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        if (manifest.Tokenizer is not { Kind: ByteTokenizer.Kind } info)
        {
            throw new OperationException($"{modelDir}: the model has no byte-level tokenizer; only byte-level tokenizers are supported so far");
        }

        var tokenizer = new ByteTokenizer(info.BosTokenId, info.EosTokenId);
        var promptIds = tokenizer.Encode(prompt);
        if (promptIds.Length + maxTokens > manifest.Architecture.MaxPositions)
        {
            throw new InvalidSettingsException($"prompt ({promptIds.Length} tokens) + --max-tokens exceeds the model's {manifest.Architecture.MaxPositions} positions");
        }

        var factory = new SessionFactory(options with { DenseGraphs = DenseGraphs.OneGraph }, log);
        try
        {
            using var pool = new ExpertSessionPool(manifest, factory);
            pool.LoadAll();
            using var forward = new MoeForward(manifest, factory, new LocalExpertDispatcher(pool));
            var result = await Generator.GenerateAsync(forward, tokenizer, promptIds, maxTokens, sampling, new ForwardContext(), cancellationToken).ConfigureAwait(false);
            return new LocalGenerationResult(result, factory.ProviderInUse);
        }
        catch (Exception ex) when (OnnxRuntimeFailures.Translate(ex) is { } failure)
        {
            throw failure;
        }
    }
}
