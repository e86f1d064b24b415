using System.Globalization;
using System.Text.Json.Nodes;
using DanceMoE.Inference;
using DanceMoE.Model.Locality;
using DanceMoE.Model.Onnx;
using DanceMoE.Model.Reference;

namespace DanceMoE.Model.Tests;

/// <summary>The committed default model (onnx/default), checked through our own forward on small held-out slices.</summary>
public sealed class TrainedModelTests
{
    private const int LocalitySliceBytes = 512;
    private static readonly string[] Domains = ["de", "en", "fr", "python"];
    private static readonly string ModelDirectory = FindModel();
    private static readonly Lazy<MoeWeights> Weights = new(() => MoeWeights.Load(Checkpoint.Open(ModelDirectory)));

    [Fact]
    public void Default_checkpoint_is_a_byte_level_mixtral_with_a_held_out_sample_per_domain()
    {
        var checkpoint = Checkpoint.Open(ModelDirectory);
        var c = checkpoint.Config;
        Assert.Equal((4, 16, 2, 128, 256), (c.NumLayers, c.NumExperts, c.TopK, c.HiddenSize, c.IntermediateSize));
        Assert.Equal((4, 2, 256), (c.NumHeads, c.NumKvHeads, c.MaxPositions));
        Assert.Equal(ByteTokenizer.Default, checkpoint.Tokenizer);
        Assert.Equal(TensorDtype.F16, checkpoint.DtypeOf(MixtralNames.Expert(3, 15, 2)));
        Assert.Equal(Domains, HeldOutTrace.Domains(ModelDirectory));
    }

    [Fact]
    public async Task Default_checkpoint_exports_and_verifies_against_the_reference()
    {
        using var dir = new TempDirectory();
        var manifest = OnnxExporter.Export(Checkpoint.Open(ModelDirectory), dir.Path, TensorDtype.F32);
        var cpu = new SessionFactory(new InferenceOptions { Provider = ExecutionProvider.Cpu, IntraOpThreads = 1 });
        using var pool = new ExpertSessionPool(manifest, cpu);
        using var forward = new MoeForward(manifest, cpu, new LocalExpertDispatcher(pool));

        var result = await ModelVerifier.VerifyAsync(
            forward, new ReferenceModel(Weights.Value), ByteTokenizer.Default.Encode("SYNOPSIS\n       ls [OPTION]"), 4, CancellationToken.None);

        Assert.True(result.MaxAbsDiff < 1e-3, $"max |logit diff| {result.MaxAbsDiff}");
    }

    [Fact]
    public void Greedy_generation_is_deterministic_and_continues_in_text()
    {
        var first = Greedy("The command ", 48);
        var second = Greedy("The command ", 48);

        Assert.Equal(first, second);
        Assert.All(first, t => Assert.InRange(t, 0, ByteTokenizer.ByteCount - 1));
        Assert.Contains(' ', ByteTokenizer.Default.Decode(first));
    }

    [Fact]
    public void Held_out_bits_per_byte_through_our_forward_is_within_0_05_of_the_model_card()
    {
        var evaluation = JsonNode.Parse(File.ReadAllText(Path.Combine(ModelDirectory, "evaluation.json")))!;
        var slice = evaluation["slice_bytes"]!.GetValue<int>();
        var card = File.ReadAllText(Path.Combine(ModelDirectory, "MODEL_CARD.md"));
        var model = new RoutedForward(Weights.Value);
        foreach (var domain in Domains)
        {
            var expected = evaluation["slice_bits_per_byte"]![domain]!.GetValue<double>();
            Assert.Contains(expected.ToString("F3", CultureInfo.InvariantCulture), card, StringComparison.Ordinal);

            var trace = HeldOutTrace.Trace(model, ByteTokenizer.Default, domain, HeldOutTrace.Sample(ModelDirectory, domain, slice));

            Assert.True(Math.Abs(trace.BitsPerByte - expected) <= 0.05, $"{domain}: {trace.BitsPerByte:F3} bits/byte here, {expected:F3} in the card");
        }

        Assert.True(evaluation["bits_per_byte_mean"]!.GetValue<double>() <= 2.0);
    }

    [Fact]
    public void Routing_on_held_out_slices_is_local_with_aware_placement_and_not_with_agnostic_placement()
    {
        var model = new RoutedForward(Weights.Value);
        var traces = Domains.AsParallel().AsOrdered()
            .Select(d => HeldOutTrace.Trace(model, ByteTokenizer.Default, d, HeldOutTrace.Sample(ModelDirectory, d, LocalitySliceBytes)))
            .ToList();

        var report = DomainLocality.Analyse(Domains, [.. traces.Select(t => t.ExpertCounts)], 0.3);

        Assert.True(report.Covered);
        Assert.True(report.LocalShareAware >= 0.6, $"aware {report.LocalShareAware:F3}");
        Assert.True(report.LocalShareAgnostic <= 0.45, $"agnostic {report.LocalShareAgnostic:F3}");
    }

    private static List<int> Greedy(string prompt, int count)
    {
        var model = new ReferenceModel(Weights.Value);
        var cache = model.NewCache();
        var vocab = model.Config.VocabSize;
        var logits = model.Forward(ByteTokenizer.Default.Encode(prompt), cache);
        var generated = new List<int>();
        for (var i = 0; i < count; i++)
        {
            var next = Sampler.ArgMax(logits.AsSpan(logits.Length - vocab, vocab));
            generated.Add(next);
            logits = model.Forward([next], cache);
        }

        return generated;
    }

    private static string FindModel()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "onnx", "default");
            if (File.Exists(Path.Combine(dir.FullName, "DanceMoE.Bus.sln")) && Directory.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new InvalidOperationException($"no onnx/default above {AppContext.BaseDirectory}");
    }
}
