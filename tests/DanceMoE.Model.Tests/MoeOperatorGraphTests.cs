using DanceMoE.Inference;
using DanceMoE.Model.Onnx;
using Microsoft.ML.OnnxRuntime;

namespace DanceMoE.Model.Tests;

public sealed class MoeOperatorGraphTests : IDisposable
{
    private static readonly InferenceOptions Cpu = new() { Provider = ExecutionProvider.Cpu, IntraOpThreads = 1 };
    private readonly TempDirectory _dir = new();

    public MoeOperatorGraphTests() => TinyCheckpoint.Write(_dir.Sub("ckpt"), TinyModels.Small());

    public void Dispose() => _dir.Dispose();

    /// <summary>The operator's weight layout (gate and up rows interleaved, projections [out, in]) is ours rearranged: same mix within float rounding.</summary>
    [Fact]
    public void The_moe_operator_built_from_an_export_mixes_the_experts_the_router_picks_as_the_per_expert_sessions_do()
    {
        var manifest = OnnxExporter.Export(Checkpoint.Open(_dir.Sub("ckpt")), _dir.Sub("onnx"), TensorDtype.F32);
        var c = manifest.Architecture;
        var (h, e) = (c.HiddenSize, c.NumExperts);
        const int tokens = 3;
        var random = new SplitMix64(5);
        var x = Enumerable.Range(0, tokens * h).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
        (int Expert, float Weight)[][] choices = [[(0, 0.7f), (3, 0.3f)], [(1, 0.5f), (2, 0.5f)], [(0, 0.25f), (2, 0.75f)]];
        var logits = Enumerable.Repeat(GraphNames.MaskedOut, tokens * e).ToArray();
        var expected = new float[tokens * h];
        var factory = new SessionFactory(Cpu);
        using var pool = new ExpertSessionPool(manifest, factory);
        for (var t = 0; t < tokens; t++)
        {
            foreach (var (expert, weight) in choices[t])
            {
                logits[(t * e) + expert] = MathF.Log(weight);
                var y = pool.Run(1, expert, x.AsSpan(t * h, h).ToArray(), 1);
                ExpertMix.AddWeighted(expected.AsSpan(t * h, h), weight, y);
            }
        }

        using var session = factory.Create(MoeOperatorGraph.Build(manifest, 1));
        using var input = OrtValue.CreateTensorValueFromMemory(x, [tokens, h]);
        using var router = OrtValue.CreateTensorValueFromMemory(logits, [tokens, e]);
        using var outputs = session.Run(new RunOptions(), [MoeOperatorGraph.Input, MoeOperatorGraph.RouterProbs], [input, router], [MoeOperatorGraph.Output]);
        var actual = outputs[0].GetTensorDataAsSpan<float>().ToArray();

        Assert.Contains(expected, v => v != 0f);
        Assert.True(ModelVerifier.MaxAbsDiff(expected, actual) < 1e-5, $"max |diff| {ModelVerifier.MaxAbsDiff(expected, actual)}");
    }

    [Fact]
    public void Quantised_experts_are_refused_with_their_format_named()
    {
        var manifest = OnnxExporter.Export(Checkpoint.Open(_dir.Sub("ckpt")), _dir.Sub("int8"), TensorDtype.F32, expertWeights: ExpertWeightFormat.Int8);
        var error = Assert.Throws<ModelFormatException>(() => MoeOperatorGraph.Build(manifest, 0));
        Assert.Contains("int8", error.Message, StringComparison.Ordinal);
    }
}
