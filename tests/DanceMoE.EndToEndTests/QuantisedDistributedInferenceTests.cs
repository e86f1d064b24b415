using DanceMoE.Edge;
using DanceMoE.Model;

namespace DanceMoE.EndToEndTests;

public sealed class QuantisedDistributedInferenceTests
{
    [Fact]
    public async Task Greedy_tokens_of_a_two_edge_cluster_on_int4_experts_equal_the_monolithic_run()
    {
        string[] edges = ["edge-1", "edge-2"];
        await using var cluster = await EdgeCluster.CreateAsync(expertWeights: ExpertWeightFormat.Int4);
        var architecture = cluster.Manifest.Architecture;
        await cluster.StartEdgesAsync(edges, cluster.WritePlacement("uniform.json", PlacementFile.Uniform(1, architecture.NumLayers, architecture.NumExperts, edges)));
        const string prompt = "edge servers share experts";

        var expected = await cluster.MonolithicAsync(prompt, 12);
        var answer = await cluster.GenerateAsync("edge-2", prompt, 12);

        Assert.Equal(ExpertWeightFormat.Int4, cluster.Manifest.ExpertFormat);
        Assert.Equal(expected, answer.TokenIds);
        Assert.True(answer.Stats.RemoteExpertCalls > 0, "nothing was distributed");
    }
}
