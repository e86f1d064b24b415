using System.Runtime.InteropServices;
using DanceMoE.Model.Onnx.Proto;
using Google.Protobuf;

namespace DanceMoE.Model.Onnx;

/// <summary>
/// One routed layer's experts as a single ONNX Runtime <c>com.microsoft.MoE</c> node (routing by softmax and top-k,
/// every expert's SwiGLU and the weighted sum in one kernel), built from an export's fp32 expert files. For measuring
/// it against the per-expert sessions (<c>bench expert-exec</c>); the runtime does not serve with it.
/// </summary>
public static class MoeOperatorGraph
{
    public const string Input = "input";
    public const string RouterProbs = "router_probs";
    public const string Output = "output";

    /// <summary>The model's bytes; fails when the experts are not stored in fp32 (the operator takes float weights).</summary>
    public static byte[] Build(ModelManifest manifest, int layer)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        if (manifest.ExpertFormat != ExpertWeightFormat.Fp32)
        {
            throw new ModelFormatException($"{manifest.Directory}: the MoE operator takes fp32 experts; these are {manifest.ExpertFormat.Name()}");
        }

        var c = manifest.Architecture;
        var (hidden, ffn, experts) = (c.HiddenSize, c.IntermediateSize, c.NumExperts);

        // fc1 [experts, 2·ffn, hidden]: gate and up rows interleaved (the CPU kernel's only SwiGLU layout); fc2 [experts, hidden, ffn].
        var fc1 = new float[experts * 2 * ffn * hidden];
        var fc2 = new float[experts * hidden * ffn];
        for (var e = 0; e < experts; e++)
        {
            var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(manifest.PathOf(manifest.Expert(layer, e).File)));
            ExternalData.Inline(model, manifest.Directory);
            // The export stores each projection transposed, [inputs, outputs], for MatMul(x, Wᵀ).
            var w1 = Floats(model, "w1", hidden * ffn);
            var w3 = Floats(model, "w3", hidden * ffn);
            var w2 = Floats(model, "w2", ffn * hidden);
            for (var f = 0; f < ffn; f++)
            {
                for (var h = 0; h < hidden; h++)
                {
                    fc1[(((e * 2 * ffn) + (2 * f)) * hidden) + h] = w1[(h * ffn) + f];
                    fc1[(((e * 2 * ffn) + (2 * f) + 1) * hidden) + h] = w3[(h * ffn) + f];
                    fc2[(((e * hidden) + h) * ffn) + f] = w2[(f * hidden) + h];
                }
            }
        }

        var g = new GraphBuilder("moe_operator", TensorDtype.F32);
        g.Input(Input, TensorProto.Types.DataType.Float, "rows", hidden);
        g.Input(RouterProbs, TensorProto.Types.DataType.Float, "rows", experts);
        var fc1Name = g.Weight("fc1_experts_weights", fc1, experts, 2 * ffn, hidden);
        var fc2Name = g.Weight("fc2_experts_weights", fc2, experts, hidden, ffn);
        g.MicrosoftNode(
            "MoE",
            [Input, RouterProbs, fc1Name, string.Empty, fc2Name],
            [
                GraphBuilder.Attr("k", c.TopK), GraphBuilder.Attr("normalize_routing_weights", c.NormTopKProb ? 1 : 0),
                GraphBuilder.Attr("swiglu_fusion", 1), GraphBuilder.Text("activation_type", "swiglu"),
            ],
            Output);
        g.Output(Output, TensorProto.Types.DataType.Float, "rows", hidden);
        return g.ToModel().ToByteArray();
    }

    private static float[] Floats(ModelProto model, string name, int count)
    {
        var tensor = model.Graph.Initializer.FirstOrDefault(t => t.Name == name)
            ?? throw new ModelFormatException($"expert graph has no initializer {name}");
        var values = tensor.RawData.IsEmpty ? [.. tensor.FloatData] : MemoryMarshal.Cast<byte, float>(tensor.RawData.Span).ToArray();
        return values.Length == count ? values : throw new ModelFormatException($"expert initializer {name} holds {values.Length} values, expected {count}");
    }
}
