using DanceMoE.Coordinator;
using MassTransit;

namespace DanceMoE.IntegrationTests.Coordinator;

public sealed class PlacementJobWarmUpTests(CoordinatorFixture fixture) : IClassFixture<CoordinatorFixture>
{
    [Fact]
    public async Task A_run_right_after_a_restart_waits_to_hear_an_edge_the_database_knew_alive()
    {
        // As MembershipWarmUp finds it at start: edge-c was alive at the newest row and beats every 600 s.
        var membership = fixture.Get<ClusterMembership>();
        membership.ExpectKnownEdges([new KnownEdge("edge-c", DateTimeOffset.UtcNow, 600)]);
        await fixture.BeatAsync(DateTimeOffset.UtcNow, ("edge-a", []), ("edge-b", []));

        var run = fixture.Get<PlacementRunner>().RunAsync("test", NewId.NextGuid(), CancellationToken.None);
        await Task.Delay(TimeSpan.FromSeconds(1));
        Assert.False(run.IsCompleted, "the run planned before edge-c, which the database knew alive, could have been heard");

        await fixture.BeatAsync(DateTimeOffset.UtcNow, ("edge-c", []));
        var decision = await run.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(["edge-a", "edge-b", "edge-c"], decision.Edges.Order(StringComparer.Ordinal));
        Assert.Empty(membership.NotHeardYet());
    }
}
