using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using DanceMoE.Cli.Verbs;
using DanceMoE.Inference;
using DanceMoE.Model;
using DanceMoE.Model.Onnx;
using Microsoft.ML.OnnxRuntime;

namespace DanceMoE.Cli.Commands;

/// <summary>
/// <c>dancemoe model tiny|export|verify|locality</c>: make a deterministic tiny checkpoint, export a checkpoint to ONNX
/// subgraphs with their manifest, and check the export against the C# reference forward.
/// </summary>
public static class ModelCommand
{
    public static Command Create() => new("model", "make, export, check and analyse models")
    {
        Tiny(),
        Export(),
        Verify(),
        Eval(),
        ModelLocalityCommand.Create(),
    };

    /// <summary>Runs <paramref name="action"/>, turning the model's and ONNX Runtime's errors into one-line failures.</summary>
    internal static async Task<int> Guarded(Func<Task<int>> action)
    {
        try
        {
            return await action().ConfigureAwait(false);
        }
        catch (ModelFormatException ex)
        {
            throw new CliException(ex.Message, ExitCodes.Failed, ex);
        }
        catch (OnnxRuntimeException ex)
        {
            throw new CliException($"ONNX Runtime: {ex.Message.Split('\n', 2)[0]}", ExitCodes.Failed, ex);
        }
        catch (ExecutionProviderUnavailableException ex)
        {
            throw new CliException(ex.Message, ExitCodes.Unavailable, ex);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new CliException(ex.Message, ExitCodes.Failed, ex);
        }
    }

    private static Command Tiny()
    {
        var outDir = CliOptions.Text("out", "directory to write the checkpoint to", required: true, valueName: "DIR");
        var seed = CliOptions.Int("seed", 0, "seed of the weights", 0);
        var layers = CliOptions.Int("layers", 4, "layers", 1, 256);
        var experts = CliOptions.Int("experts", 16, "experts per layer", 1, 1024);
        var topK = CliOptions.Int("top-k", 2, "experts per token", 1, 64);
        var hidden = CliOptions.Int("hidden", 128, "hidden size", 8, 8192);
        var heads = CliOptions.Int("heads", 4, "attention heads", 1, 256);
        var kvHeads = CliOptions.Int("kv-heads", 2, "key/value heads", 1, 256);
        var dtype = CliOptions.Choice("dtype", "weight type", "f32", "f16", "bf16");
        var shardMb = CliOptions.Int("shard-mb", 0, "largest safetensors shard, MB (0: one file)", 0);
        var family = CliOptions.Choice("family", "model_type whose Hugging Face layout and structure to write", [.. ModelFamilies.Supported]);
        var command = new Command("tiny", "write a deterministic tiny checkpoint") { outDir, seed, family, layers, experts, topK, hidden, heads, kvHeads, dtype, shardMb };
        command.SetAction((result, _) => Guarded(() => Task.FromResult(Tiny(result.GetRequiredValue(outDir), new TinyOptions
        {
            Seed = (ulong)result.GetValue(seed),
            Family = result.GetRequiredValue(family),
            Layers = result.GetValue(layers),
            Experts = result.GetValue(experts),
            TopK = result.GetValue(topK),
            Hidden = result.GetValue(hidden),
            Heads = result.GetValue(heads),
            KvHeads = result.GetValue(kvHeads),
            Dtype = Enum.Parse<TensorDtype>(result.GetRequiredValue(dtype), ignoreCase: true),
            MaxShardBytes = (long)result.GetValue(shardMb) * 1024 * 1024,
        }))));
        return command;
    }

    private static int Tiny(string outDir, TinyOptions options)
    {
        OutputPaths.CheckDirectory("--out", outDir);
        MoeConfig config;
        try
        {
            config = TinyCheckpoint.Write(outDir, options);
        }
        catch (Exception ex) when (ex is ArgumentException or ModelFormatException)
        {
            throw new UsageException(ex.Message.Split(" (Parameter", 2)[0]);
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"tiny {config.ModelType} checkpoint in {outDir}: {config.NumLayers} layers ({config.RoutedLayers} MoE) x {config.NumExperts} experts, top-{config.TopK}, hidden {config.HiddenSize}, ffn {config.IntermediateSize}, vocab {config.VocabSize}, seed {options.Seed}"));
        return ExitCodes.Ok;
    }

    private static Command Export()
    {
        var checkpoint = CliOptions.Positional("CHECKPOINT", "checkpoint directory (config.json and safetensors)");
        var outDir = CliOptions.Text("out", "directory to write the subgraphs and their manifest to", required: true, valueName: "DIR");
        var dtype = CliOptions.Choice("dtype", "weight type of the export", "f32", "f16");
        var experts = CliOptions.Choice("expert-weights", "routed experts' weights (int8/int4: block-wise, 32 per scale; default: as --dtype)", "same", "fp32", "fp16", "int8", "int4");
        var command = new Command("export", "export a checkpoint to ONNX subgraphs with their manifest") { checkpoint, outDir, dtype, experts };
        command.SetAction((result, _) => Guarded(() => Task.FromResult(Export(
            result.GetRequiredValue(checkpoint), result.GetRequiredValue(outDir), Enum.Parse<TensorDtype>(result.GetRequiredValue(dtype), ignoreCase: true), result.GetRequiredValue(experts) is var e && e != "same" ? ExpertQuantization.Parse(e) : null))));
        return command;
    }

    private static int Export(string checkpointDir, string outDir, TensorDtype dtype, ExpertWeightFormat? experts)
    {
        OutputPaths.CheckDirectory("--out", outDir);
        var checkpoint = Checkpoint.Open(checkpointDir);
        var manifest = Progress.Run($"exporting {checkpointDir}", log => OnnxExporter.Export(checkpoint, outDir, dtype, log, experts));
        var expertBytes = manifest.Experts.First().WeightBytes;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"exported to {outDir}: embedding, {manifest.Layers.Count} dense layers, {manifest.Experts.Count()} experts ({expertBytes} weight bytes each, {manifest.ExpertWeights}), head; opset {manifest.Opset}"));
        return ExitCodes.Ok;
    }

    private static Command Eval()
    {
        var model = CliOptions.Model();
        var maxBytes = CliOptions.Int("max-bytes", 0, "bytes of each domain's sample to use (0: all)", 0, int.MaxValue);
        var json = CliOptions.Flag("json", "print JSON: bits_per_byte over all bytes, and per domain");
        var command = new Command("eval", "held-out bits per byte of an exported model through our runtime") { model, maxBytes, json };
        var inference = new InferenceArguments(command);
        command.SetAction((result, cancellationToken) => Guarded(async () =>
        {
            var manifest = InferenceArguments.LoadManifest(InferenceArguments.ResolveModel(result.GetValue(model)));
            var evaluation = await ModelEvaluation.RunAsync(manifest, result.GetValue(maxBytes), inference.Read(result), InferenceArguments.Log, cancellationToken).ConfigureAwait(false);
            if (result.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    bits_per_byte = evaluation.BitsPerByte,
                    domains = evaluation.Domains.ToDictionary(d => d.Domain, d => new { bytes = d.Bytes, bits_per_byte = d.BitsPerByte }),
                    provider = evaluation.Provider ?? "cpu",
                }));
            }
            else
            {
                foreach (var d in evaluation.Domains)
                {
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{d.Domain,-10} {d.Bytes,8} bytes  {d.BitsPerByte:F4} bits/byte"));
                }

                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{"all",-10} {evaluation.Domains.Sum(d => d.Bytes),8} bytes  {evaluation.BitsPerByte:F4} bits/byte"));
            }

            return ExitCodes.Ok;
        }));
        return command;
    }

    private static Command Verify()
    {
        var model = CliOptions.Positional("DIR", "the exported model");
        var checkpoint = CliOptions.Text("checkpoint", "the checkpoint it was exported from", required: true, valueName: "CHECKPOINT");
        var prompt = CliOptions.Text("prompt", "prompt to run through both", "edge servers share experts", valueName: "TEXT");
        var decodeSteps = CliOptions.Int("decode-steps", 4, "decode steps after the prefill", 0, 1000);
        var tolerance = CliOptions.OptionalDouble("tolerance", "largest |logit diff| accepted (default: 1e-4 for f32, 5e-2 otherwise)", 0);
        var command = new Command("verify", "check an export against the C# reference forward") { model, checkpoint, prompt, decodeSteps, tolerance };
        var inference = new InferenceArguments(command);
        command.SetAction((result, cancellationToken) => Guarded(() => VerifyAsync(
            result.GetRequiredValue(model),
            result.GetRequiredValue(checkpoint),
            result.GetRequiredValue(prompt),
            result.GetValue(decodeSteps),
            result.GetValue(tolerance),
            inference.Read(result),
            cancellationToken)));
        return command;
    }

    private static async Task<int> VerifyAsync(
        string modelDir, string checkpointDir, string prompt, int decodeSteps, double? tolerance, InferenceOptions options, CancellationToken cancellationToken)
    {
        var manifest = InferenceArguments.LoadManifest(modelDir);
        var check = await ExportVerification.RunAsync(manifest, modelDir, checkpointDir, prompt, decodeSteps, tolerance, options, InferenceArguments.Log, cancellationToken).ConfigureAwait(false);
        foreach (var step in check.Result.Steps)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{step.Phase,-10} {step.Tokens,4} token(s)  max |logit diff| {step.MaxAbsDiff:E2}"));
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"max |logit diff| {check.Result.MaxAbsDiff:E2} over prefill of {check.PromptTokens} tokens + {check.DecodeSteps} decode steps on {check.Provider} (tolerance {check.Tolerance:E0}): {(check.Ok ? "ok" : "FAILED")}"));
        return check.Ok ? ExitCodes.Ok : ExitCodes.Failed;
    }
}
