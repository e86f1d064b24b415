using System.Globalization;
using DanceMoE.Model;
using DanceMoE.Placement;

namespace DanceMoE.Coordinator;

/// <summary>
/// An exported model as the Placement library sees it: layers, experts, top-k, the bytes of one expert (the largest)
/// and of one token's hidden row on the bus (float32 whatever the weights' type).
/// </summary>
public sealed record ModelShape(int Layers, int Experts, int TopK, long ExpertBytes, long HiddenBytes)
{
    public static ModelShape Of(ModelManifest manifest)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        var a = manifest.Architecture;
        return new ModelShape(a.RoutedLayers, a.NumExperts, a.TopK, manifest.Experts.Max(e => e.WeightBytes), a.HiddenSize * sizeof(float));
    }

    /// <summary>Every expert of the model once, each of <see cref="ExpertBytes"/>.</summary>
    public int RoutedExperts => Layers * Experts;

    public MoeModel ToMoeModel() => MoeModel.Uniform(Layers, Experts, TopK, ExpertBytes, HiddenBytes);

    /// <summary>The coordinator's <c>PlacementJob</c> settings for this model, as configuration keys.</summary>
    public Dictionary<string, string?> PlacementJobSettings()
    {
        var inv = CultureInfo.InvariantCulture;
        return new Dictionary<string, string?>(StringComparer.Ordinal)
        {
            ["PlacementJob:Layers"] = Layers.ToString(inv),
            ["PlacementJob:Experts"] = Experts.ToString(inv),
            ["PlacementJob:TopK"] = TopK.ToString(inv),
            ["PlacementJob:ExpertBytes"] = ExpertBytes.ToString(inv),
            ["PlacementJob:HiddenBytes"] = HiddenBytes.ToString(inv),
        };
    }
}
