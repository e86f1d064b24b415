using DanceMoE.Edge;

namespace DanceMoE.EndToEndTests;

/// <summary>
/// A peer that holds every expert a token needs at a layer answers the token's weighted sum, one row instead of one per
/// expert; the answer is still the monolithic one.
/// </summary>
public sealed class PeerSumTests
{
    [Fact]
    public async Task Layers_wholly_on_a_peer_come_back_as_one_summed_row_per_token_and_the_answer_is_the_oracles()
    {
        await using var cluster = await EdgeCluster.CreateAsync();
        var a = cluster.Manifest.Architecture;
        // edge-2 holds every expert; edge-1 only layer 0's, so its layers 1.. are wholly on edge-2.
        var assignments = PlacementFile.Uniform(1, a.NumLayers, a.NumExperts, ["edge-2"]).Assignments
            .Select(x => x.Layer == 0 ? x with { Servers = ["edge-1", "edge-2"] } : x);
        var placement = cluster.WritePlacement("layer-0-here.json", new EdgePlacement(1, assignments));
        await cluster.StartEdgesAsync(["edge-1", "edge-2"], placement);
        const string prompt = "a peer adds the experts up";
        const int tokens = 12;
        var expected = await cluster.MonolithicAsync(prompt, tokens);

        var answer = await cluster.GenerateAsync("edge-1", prompt, tokens);

        Assert.Equal(expected, answer.TokenIds);
        Assert.True(answer.Stats.RemoteExpertCalls > 0, "nothing was distributed");
        // Each token run crosses once per remote layer: its hidden state out, the sum of its top-k back (not k rows).
        var rowsRun = answer.Stats.PromptTokens + answer.TokenIds.Count - 1;
        var rowBytes = a.HiddenSize * sizeof(float);
        Assert.Equal((long)(a.NumLayers - 1) * rowsRun * 2 * rowBytes, answer.Stats.RemoteBytes);
    }
}
