using DanceMoE.Contracts;
using DanceMoE.Edge;
using DanceMoE.Operations;
using MassTransit;

namespace DanceMoE.EndToEndTests;

public sealed class RedeliveryTests
{
    [Fact]
    public async Task A_request_whose_origin_edge_dies_is_redelivered_after_restart_and_gives_the_oracle_tokens()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 19);
        var a = cluster.Manifest.Architecture;
        string[] edges = ["edge-1", "edge-2"];
        var placement = cluster.WritePlacement("uniform.json", PlacementFile.Uniform(1, a.NumLayers, a.NumExperts, edges));
        // Every remote batch waits 2 x 5 ms, so the request lasts seconds however fast the machine (without it, 150 tokens
        // took under 500 ms on a quiet machine and ended before the kill).
        await cluster.StartEdgesAsync(edges, placement, extraArguments: ["--link-delay-ms", "5"]);
        const string prompt = "a redelivered request";
        var expected = await cluster.MonolithicAsync(prompt, 150);

        var pending = cluster.GenerateAsync("edge-1", prompt, 150, TimeSpan.FromSeconds(180));
        await Task.Delay(500);
        Assert.False(pending.IsCompleted, "the request finished before the edge could be killed");
        cluster.Kill("edge-1");
        await cluster.RestartAsync("edge-1");
        var answer = await pending;

        Assert.Equal(expected, answer.TokenIds);
    }

    [Fact]
    public async Task Infer_tells_an_unknown_edge_from_a_running_one()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 23);

        var error = await Assert.ThrowsAsync<OperationException>(() => EdgeRequests.SendToRunningEdgeAsync(
            cluster.VirtualHost.Uri, "edge-9", new GenerateText { RequestId = NewId.NextGuid(), Prompt = "hello", MaxNewTokens = 4 }, TimeSpan.FromSeconds(10), CancellationToken.None));

        Assert.Equal("unknown edge 'edge-9': no queue 'edge-9' on the broker (./dancemoe cluster up starts edges)", error.Message);
        Assert.Equal(OperationFailure.Unavailable, error.Failure);
    }
}
