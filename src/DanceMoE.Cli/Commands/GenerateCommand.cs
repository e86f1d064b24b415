using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using DanceMoE.Cli.Verbs;
using DanceMoE.Inference;

namespace DanceMoE.Cli.Commands;

/// <summary>
/// <c>dancemoe generate</c>: monolithic generation through the exported subgraphs, every expert local.
/// With greedy decoding this is the oracle the distributed runtime is compared with.
/// </summary>
public static class GenerateCommand
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public static Command Create()
    {
        var model = CliOptions.Model();
        var prompt = CliOptions.Prompt();
        var maxTokens = CliOptions.Int("max-tokens", 32, "tokens to generate at most", 1, 1_000_000);
        var temperature = CliOptions.Double("temperature", 0, "sampling temperature (0: greedy)", 0, 100);
        var topP = CliOptions.Double("top-p", 1, "nucleus sampling threshold", 0.000001, 1);
        var seed = CliOptions.Int("seed", 0, "sampling seed", 0);
        var json = CliOptions.Flag("json", "print the tokens, text and speed as JSON");
        var command = new Command("generate", "monolithic generation through the exported subgraphs, every expert local") { model, prompt, maxTokens, temperature, topP, seed, json };
        var inference = new InferenceArguments(command);
        command.SetAction((result, cancellationToken) => RunAsync(
            result.GetValue(model),
            result.GetRequiredValue(prompt),
            result.GetValue(maxTokens),
            new SamplingOptions
            {
                Temperature = result.GetValue(temperature),
                TopP = result.GetValue(topP),
                Seed = (ulong)result.GetValue(seed),
            },
            result.GetValue(json),
            inference.Read(result),
            cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(
        string? model, string prompt, int maxTokens, SamplingOptions sampling, bool asJson, InferenceOptions options, CancellationToken cancellationToken)
    {
        var modelDir = InferenceArguments.ResolveModel(model);
        var manifest = InferenceArguments.LoadManifest(modelDir);
        var (result, provider) = await LocalGeneration.RunAsync(manifest, modelDir, prompt, maxTokens, sampling, options, InferenceArguments.Log, cancellationToken).ConfigureAwait(false);
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
                Provider = provider,
            }, Json));
        }
        else
        {
            Console.WriteLine(Hosting.PrintableText.Of(result.Text, keepLines: true));
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"dancemoe: {result.TokenIds.Count} tokens in {result.Seconds:F2} s ({result.TokensPerSecond:F1} tokens/s) on {provider}{(result.StoppedAtEos ? ", stopped at end of sequence" : string.Empty)}"));
        }

        return ExitCodes.Ok;
    }
}
