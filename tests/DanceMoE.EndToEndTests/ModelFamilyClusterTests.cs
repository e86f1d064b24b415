using DanceMoE.Edge;
using DanceMoE.Model;

namespace DanceMoE.EndToEndTests;

public sealed class ModelFamilyClusterTests
{
    private static readonly string[] Edges = ["edge-1", "edge-2", "edge-3"];

    /// <summary>One small cluster per family in turn: shared experts and dense layers stay on the origin edge.</summary>
    [Fact]
    public async Task Every_new_family_generates_the_same_tokens_on_three_edges_as_monolithic()
    {
        foreach (var family in new[] { MoeConfig.DeepseekV2, MoeConfig.Qwen2Moe, MoeConfig.Olmoe })
        {
            var model = new TinyOptions { Seed = 13, Family = family, Layers = 3, Experts = 6, TopK = 2, Hidden = 32, Heads = 4, KvHeads = 2, MaxPositions = 256 };
            await using var cluster = await EdgeCluster.CreateAsync(model: model);
            var a = cluster.Manifest.Architecture;
            var placement = cluster.WritePlacement("uniform.json", PlacementFile.Uniform(1, a.RoutedLayers, a.NumExperts, Edges));
            await cluster.StartEdgesAsync(Edges, placement);
            const string prompt = "edge servers share experts";

            var expected = await cluster.MonolithicAsync(prompt, 10);
            var answer = await cluster.GenerateAsync("edge-3", prompt, 10);

            Assert.Equal(family, a.ModelType);
            Assert.Equal(expected, answer.TokenIds);
            Assert.True(answer.Stats.RemoteExpertCalls > 0, $"{family}: nothing was distributed");
        }
    }
}
