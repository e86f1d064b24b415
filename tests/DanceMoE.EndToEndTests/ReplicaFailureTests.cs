using DanceMoE.Edge;
using DanceMoE.Hosting;
using MassTransit;

namespace DanceMoE.EndToEndTests;

public sealed class ReplicaFailureTests
{
    [Fact]
    public async Task A_dead_edge_is_replaced_by_another_replica_within_the_request_and_the_tokens_stay_the_same()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 13);
        var a = cluster.Manifest.Architecture;
        string[] edges = ["edge-1", "edge-2", "edge-3"];
        // Every expert on two edges: edge-2 is listed first for the experts it holds, edge-3 backs them up.
        var assignments = PlacementFile.Uniform(1, a.NumLayers, a.NumExperts, edges).Assignments
            .Select(x => x with { Servers = [x.Servers[0], edges[(Array.IndexOf(edges, x.Servers[0]) + 1) % edges.Length]] });
        var placement = cluster.WritePlacement("replicated.json", new EdgePlacement(1, assignments));
        await cluster.StartEdgesAsync(edges, placement, deadlineMs: 3000);
        const string prompt = "replicas keep the answer";
        var expected = await cluster.MonolithicAsync(prompt, 120);
        // edge-1 has measured no peer yet: every estimate ties and the tie goes to edge-2, listed first. Killed now, edge-2
        // is still edge-1's choice when the request's first remote batch goes out (a kill timed during the request could
        // land after it ended on a loaded machine, or after edge-1 had moved to edge-3 on its measurements).
        cluster.Kill("edge-2");

        var answer = await cluster.GenerateAsync("edge-1", prompt, 120, TimeSpan.FromSeconds(120));

        Assert.Equal(expected, answer.TokenIds);
        Assert.True(answer.Stats.Retries >= 1, $"no retry: edge-2 was never asked: {answer.Stats}");
    }

    [Fact]
    public async Task An_edge_killed_with_no_other_replica_fails_the_request_with_a_clear_error_within_the_deadline()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 17);
        var a = cluster.Manifest.Architecture;
        string[] edges = ["edge-1", "edge-2"];
        var placement = cluster.WritePlacement("uniform.json", PlacementFile.Uniform(1, a.NumLayers, a.NumExperts, edges));
        await cluster.StartEdgesAsync(edges, placement, deadlineMs: 1000);
        cluster.Kill("edge-2");

        // A hang would end in the client's RequestTimeoutException after 60 s, not in the edge's fault.
        var fault = await Assert.ThrowsAsync<RequestFaultException>(() => cluster.GenerateAsync("edge-1", "nobody holds my experts", 8, TimeSpan.FromSeconds(60)));

        Assert.Contains("failed on edge-2 (no answer within the deadline) and placement v1 has no other replica", fault.Fault!.Exceptions[0].Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Experts_unloaded_behind_the_placement_are_served_by_another_replica_with_the_same_tokens()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 31);
        var a = cluster.Manifest.Architecture;
        string[] edges = ["edge-1", "edge-2"];
        // Every expert on both edges: edge-1 runs everything locally until it unloads layer 0.
        var assignments = PlacementFile.Uniform(1, a.NumLayers, a.NumExperts, edges).Assignments.Select(x => x with { Servers = edges });
        await cluster.StartEdgesAsync(edges, cluster.WritePlacement("replicated.json", new EdgePlacement(1, assignments)));
        const string prompt = "unloaded while the placement still says here";
        var expected = await cluster.MonolithicAsync(prompt, 12);
        var control = cluster.Bus.CreateRequestClient<DanceMoE.Contracts.UnloadExpert>(EdgeQueues.ControlAddress("edge-1"));
        for (var e = 0; e < a.NumExperts; e++)
        {
            var unloaded = await control.GetResponse<DanceMoE.Contracts.ExpertUnloaded>(new DanceMoE.Contracts.UnloadExpert { CommandId = NewId.NextGuid(), Layer = 0, Expert = e });
            Assert.True(unloaded.Message.WasLoaded);
        }

        var answer = await cluster.GenerateAsync("edge-1", prompt, 12);

        Assert.Equal(expected, answer.TokenIds);
        Assert.True(answer.Stats.RemoteExpertCalls > 0, "layer 0 should have run on edge-2");
    }
}
