using DanceMoE.Coordinator;

namespace DanceMoE.IntegrationTests.Coordinator;

public sealed class MembershipDownTests(CoordinatorFixture fixture) : IClassFixture<CoordinatorFixture>
{
    [Fact]
    public async Task An_edge_is_down_once_the_configured_number_of_heartbeats_is_missing()
    {
        var sentAt = new DateTimeOffset(2026, 11, 25, 12, 0, 0, TimeSpan.Zero);
        await fixture.BeatAsync(sentAt, ("edge-a", []), ("edge-b", []));
        await fixture.BeatAsync(sentAt.AddHours(1), ("edge-b", []));
        var membership = fixture.Get<ClusterMembership>();
        var downAfter = membership.Options.DownAfter;
        Assert.Equal(TimeSpan.FromHours(3), downAfter);

        var justBefore = membership.Snapshot(sentAt + downAfter - TimeSpan.FromMilliseconds(1)).Where(e => e.EdgeId is "edge-a" or "edge-b").ToList();
        Assert.Equal(2, justBefore.Count);
        Assert.All(justBefore, e => Assert.True(e.IsAlive, e.EdgeId));

        var atThreeMissed = membership.Snapshot(sentAt + downAfter);
        Assert.False(atThreeMissed.Single(e => e.EdgeId == "edge-a").IsAlive);
        Assert.True(atThreeMissed.Single(e => e.EdgeId == "edge-b").IsAlive);
        Assert.Equal(["edge-b"], membership.Alive(sentAt + downAfter).Select(e => e.EdgeId).Where(id => id is "edge-a" or "edge-b"));
    }

    [Fact]
    public async Task A_late_heartbeat_does_not_move_an_edge_back_in_time()
    {
        var sentAt = new DateTimeOffset(2026, 11, 26, 12, 0, 0, TimeSpan.Zero);
        await fixture.BeatAsync(sentAt, ("edge-c", ["0:1"]));
        await fixture.EdgeBus.Publish(new DanceMoE.Contracts.EdgeHeartbeat { EdgeId = "edge-c", SentAt = sentAt.AddMinutes(-5), ExecutionProvider = "cpu" });
        await fixture.BeatAsync(sentAt.AddSeconds(1), ("edge-d", []));

        var edge = fixture.Get<ClusterMembership>().Snapshot(sentAt).Single(e => e.EdgeId == "edge-c");
        Assert.Equal(sentAt, edge.LastSeenAt);
        Assert.True(edge.Holds(0, 1));
    }
}
