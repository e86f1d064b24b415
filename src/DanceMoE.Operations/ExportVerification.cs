using DanceMoE.Inference;
using DanceMoE.Model;
using DanceMoE.Model.Reference;

namespace DanceMoE.Operations;

/// <summary>How an export compared with the reference forward (<c>dancemoe model verify</c>).</summary>
public sealed record ExportVerificationResult(VerifyResult Result, int PromptTokens, int DecodeSteps, string? Provider, double Tolerance)
{
    /// <summary>Whether the largest logit difference is within the tolerance.</summary>
    public bool Ok => Result.MaxAbsDiff <= Tolerance;
}

/// <summary>Checks an exported model against the C# reference forward of the checkpoint it was exported from.</summary>
public static class ExportVerification
{
    /// <summary>
    /// Runs <paramref name="prompt"/> and <paramref name="decodeSteps"/> decode steps through both; the tolerance defaults
    /// to 1e-4 for f32 exports and 5e-2 otherwise. The reference computes quantised or f16 experts with the weights the
    /// export stores, so only summation order separates the two and an f32 export keeps the f32 tolerance.
    /// </summary>
    public static async Task<ExportVerificationResult> RunAsync(
        ModelManifest manifest, string modelDir, string checkpointDir, string prompt, int decodeSteps, double? tolerance, InferenceOptions options,
        Action<string> log, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        var corrupt = manifest.FindCorruptFiles();
        if (corrupt.Count > 0)
        {
            throw new OperationException($"{modelDir}: file hashes differ from the manifest: {string.Join(", ", corrupt)}");
        }

        var checkpoint = Checkpoint.Open(checkpointDir);
        if (!checkpoint.Config.SameArchitecture(manifest.Architecture))
        {
            throw new OperationException($"{checkpointDir}: its config.json differs from the architecture in the manifest");
        }

        var limit = tolerance ?? (manifest.WeightDtype == "f32" ? 1e-4 : 5e-2);
        var tokenizer = checkpoint.Tokenizer ?? ByteTokenizer.Default;
        var tokens = tokenizer.Encode(prompt);
        if (tokens.Any(t => t >= manifest.Architecture.VocabSize))
        {
            throw new OperationException("the prompt's byte tokens do not fit this model's vocabulary");
        }

        if (tokens.Length + decodeSteps > manifest.Architecture.MaxPositions)
        {
            throw new InvalidSettingsException(
                $"prompt ({tokens.Length} tokens) + --decode-steps ({decodeSteps}) exceeds the model's {manifest.Architecture.MaxPositions} positions");
        }

        var reference = ReferenceModel.Streaming(checkpoint, expertWeights: manifest.ExpertFormat);
        var factory = new SessionFactory(options, log);
        using var pool = new ExpertSessionPool(manifest, factory);
        using var forward = new MoeForward(manifest, factory, new LocalExpertDispatcher(pool));
        var result = await ModelVerifier.VerifyAsync(forward, reference, tokens, decodeSteps, cancellationToken).ConfigureAwait(false);
        return new ExportVerificationResult(result, tokens.Length, decodeSteps, factory.ProviderInUse, limit);
    }
}
