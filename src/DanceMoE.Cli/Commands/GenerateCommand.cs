using System.Globalization;
using System.Text.Json;
using DanceMoE.Inference;
using DanceMoE.Model;
using Microsoft.ML.OnnxRuntime;

namespace DanceMoE.Cli.Commands;

/// <summary>
/// <c>dancemoe generate</c>: monolithic generation through the exported subgraphs, every expert local.
/// With greedy decoding this is the oracle the distributed runtime is compared with.
/// </summary>
public sealed class GenerateCommand : ICliCommand
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public string Verb => "generate";

    public string Usage =>
        $"generate --model DIR --prompt TEXT --max-tokens N [--temperature 0] [--top-p 1] [--seed 0] [--json] {InferenceArguments.Usage}";

    public async Task<int> RunAsync(Arguments args, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        var modelDir = args.Required("model");
        var prompt = args.Required("prompt");
        var maxTokens = args.Int("max-tokens", 32, 1, 1_000_000);
        var sampling = new SamplingOptions
        {
            Temperature = args.Double("temperature", 0, 0, 100),
            TopP = args.Double("top-p", 1, 0.000001, 1),
            Seed = (ulong)args.Int("seed", 0, 0),
        };
        var asJson = args.Flag("json");
        var options = InferenceArguments.Read(args);
        args.EnsureAllUsed(0);

        var manifest = InferenceArguments.LoadManifest(modelDir);
        if (manifest.Tokenizer is not { Kind: ByteTokenizer.Kind } info)
        {
            throw new CliException($"{modelDir}: the model has no byte-level tokenizer; only byte-level tokenizers are supported so far");
        }

        var tokenizer = new ByteTokenizer(info.BosTokenId, info.EosTokenId);
        var promptIds = tokenizer.Encode(prompt);
        if (promptIds.Length + maxTokens > manifest.Architecture.MaxPositions)
        {
            throw new UsageException($"prompt ({promptIds.Length} tokens) + --max-tokens exceeds the model's {manifest.Architecture.MaxPositions} positions");
        }

        GenerationResult result;
        var factory = new SessionFactory(options, InferenceArguments.Log);
        try
        {
            using var pool = new ExpertSessionPool(manifest, factory);
            pool.LoadAll();
            using var forward = new MoeForward(manifest, factory, new LocalExpertDispatcher(pool));
            result = await Generator.GenerateAsync(forward, tokenizer, promptIds, maxTokens, sampling, new ForwardContext(), cancellationToken).ConfigureAwait(false);
        }
        catch (OnnxRuntimeException ex)
        {
            throw new CliException($"ONNX Runtime: {ex.Message.Split('\n', 2)[0]}", ExitCodes.Failed, ex);
        }
        catch (ExecutionProviderUnavailableException ex)
        {
            throw new CliException(ex.Message, ExitCodes.Unavailable, ex);
        }

        if (asJson)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                result.PromptIds,
                result.TokenIds,
                result.Text,
                Tokens = result.TokenIds.Count,
                result.Seconds,
                result.TokensPerSecond,
                result.StoppedAtEos,
                Provider = factory.ProviderInUse,
            }, Json));
        }
        else
        {
            Console.WriteLine(result.Text);
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"dancemoe: {result.TokenIds.Count} tokens in {result.Seconds:F2} s ({result.TokensPerSecond:F1} tokens/s) on {factory.ProviderInUse}{(result.StoppedAtEos ? ", stopped at end of sequence" : string.Empty)}"));
        }

        return ExitCodes.Ok;
    }
}
