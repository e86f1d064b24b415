using System.Globalization;
using DanceMoE.Inference;
using DanceMoE.Model;
using DanceMoE.Model.Onnx;
using DanceMoE.Model.Reference;
using Microsoft.ML.OnnxRuntime;

namespace DanceMoE.Cli.Commands;

/// <summary>
/// <c>dancemoe model tiny|export|verify</c>: make a deterministic tiny checkpoint, export a checkpoint to ONNX
/// subgraphs with their manifest, and check the export against the C# reference forward.
/// </summary>
public sealed class ModelCommand : ICliCommand
{
    public string Verb => "model";

    public string Usage =>
        "model tiny --out DIR [--seed N] [--layers 4] [--experts 16] [--top-k 2] [--hidden 128] [--heads 4] [--kv-heads 2] [--dtype f32|f16|bf16] [--shard-mb N]"
        + "  |  model export CHECKPOINT --out DIR [--dtype f32|f16]"
        + $"  |  model verify DIR --checkpoint CHECKPOINT [--prompt TEXT] [--decode-steps 4] [--tolerance X] {InferenceArguments.Usage}"
        + "  |  " + ModelLocalityCommand.Usage;

    public async Task<int> RunAsync(Arguments args, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        var action = args.Positional0("action (tiny, export, verify or locality)");
        try
        {
            return action switch
            {
                "tiny" => Tiny(args),
                "export" => Export(args),
                "verify" => await VerifyAsync(args, cancellationToken).ConfigureAwait(false),
                "locality" => await ModelLocalityCommand.RunAsync(args, cancellationToken).ConfigureAwait(false),
                _ => throw new UsageException($"unknown action '{action}' (tiny, export, verify or locality)"),
            };
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
    }

    private static int Tiny(Arguments args)
    {
        var outDir = args.Required("out");
        var options = new TinyOptions
        {
            Seed = (ulong)args.Int("seed", 0, 0),
            Layers = args.Int("layers", 4, 1, 256),
            Experts = args.Int("experts", 16, 1, 1024),
            TopK = args.Int("top-k", 2, 1, 64),
            Hidden = args.Int("hidden", 128, 8, 8192),
            Heads = args.Int("heads", 4, 1, 256),
            KvHeads = args.Int("kv-heads", 2, 1, 256),
            Dtype = Dtype(args.Option("dtype") ?? "f32", allowBf16: true),
            MaxShardBytes = (long)args.Int("shard-mb", 0, 0) * 1024 * 1024,
        };
        args.EnsureAllUsed(1);
        MoeConfig config;
        try
        {
            config = TinyCheckpoint.Write(outDir, options);
        }
        catch (ArgumentException ex)
        {
            throw new UsageException(ex.Message.Split(" (Parameter", 2)[0]);
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"tiny checkpoint in {outDir}: {config.NumLayers} layers x {config.NumExperts} experts, top-{config.TopK}, hidden {config.HiddenSize}, ffn {config.IntermediateSize}, vocab {config.VocabSize}, seed {options.Seed}"));
        return ExitCodes.Ok;
    }

    private static int Export(Arguments args)
    {
        if (args.Positional.Count < 2)
        {
            throw new UsageException("missing CHECKPOINT directory");
        }

        var outDir = args.Required("out");
        var dtype = Dtype(args.Option("dtype") ?? "f32", allowBf16: false);
        args.EnsureAllUsed(2);
        var checkpoint = Checkpoint.Open(args.Positional[1]);
        var manifest = OnnxExporter.Export(checkpoint, outDir, dtype, line => Console.Error.WriteLine($"dancemoe: {line}"));
        var expertBytes = manifest.Experts.First().WeightBytes;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"exported to {outDir}: embedding, {manifest.Layers.Count} dense layers, {manifest.Experts.Count()} experts ({expertBytes} weight bytes each, {manifest.WeightDtype}), head; opset {manifest.Opset}"));
        return ExitCodes.Ok;
    }

    private static async Task<int> VerifyAsync(Arguments args, CancellationToken cancellationToken)
    {
        if (args.Positional.Count < 2)
        {
            throw new UsageException("missing DIR of the exported model");
        }

        var checkpointDir = args.Required("checkpoint");
        var prompt = args.Option("prompt") ?? "edge servers share experts";
        var decodeSteps = args.Int("decode-steps", 4, 0, 1000);
        var tolerance = args.Option("tolerance") is null ? (double?)null : args.Double("tolerance", 1e-4, 0);
        var options = InferenceArguments.Read(args);
        args.EnsureAllUsed(2);

        var manifest = InferenceArguments.LoadManifest(args.Positional[1]);
        var corrupt = manifest.FindCorruptFiles();
        if (corrupt.Count > 0)
        {
            throw new CliException($"{args.Positional[1]}: file hashes differ from the manifest: {string.Join(", ", corrupt)}");
        }

        var checkpoint = Checkpoint.Open(checkpointDir);
        if (checkpoint.Config with { TorchDtype = manifest.Architecture.TorchDtype } != manifest.Architecture)
        {
            throw new CliException($"{checkpointDir}: its config.json differs from the architecture in the manifest");
        }

        var limit = tolerance ?? (manifest.WeightDtype == "f32" ? 1e-4 : 5e-2);
        var tokenizer = checkpoint.Tokenizer ?? ByteTokenizer.Default;
        var tokens = tokenizer.Encode(prompt);
        if (tokens.Any(t => t >= manifest.Architecture.VocabSize))
        {
            throw new CliException("the prompt's byte tokens do not fit this model's vocabulary");
        }

        var reference = ReferenceModel.Streaming(checkpoint);
        var factory = new SessionFactory(options, InferenceArguments.Log);
        using var pool = new ExpertSessionPool(manifest, factory);
        using var forward = new MoeForward(manifest, factory, new LocalExpertDispatcher(pool));
        var result = await ModelVerifier.VerifyAsync(forward, reference, tokens, decodeSteps, cancellationToken).ConfigureAwait(false);
        foreach (var step in result.Steps)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{step.Phase,-8} {step.Tokens,4} token(s)  max |logit diff| {step.MaxAbsDiff:E2}"));
        }

        var ok = result.MaxAbsDiff <= limit;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"max |logit diff| {result.MaxAbsDiff:E2} over prefill of {tokens.Length} tokens + {decodeSteps} decode steps on {factory.ProviderInUse} (tolerance {limit:E0}): {(ok ? "ok" : "FAILED")}"));
        return ok ? ExitCodes.Ok : ExitCodes.Failed;
    }

    private static TensorDtype Dtype(string text, bool allowBf16) => text switch
    {
        "f32" => TensorDtype.F32,
        "f16" => TensorDtype.F16,
        "bf16" when allowBf16 => TensorDtype.BF16,
        _ => throw new UsageException($"--dtype must be f32{(allowBf16 ? ", f16 or bf16" : " or f16")} (got '{text}')"),
    };
}
