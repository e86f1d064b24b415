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

public sealed class MembershipIntervalTests
{
    [Fact]
    public void An_edge_that_beats_less_often_than_the_coordinator_assumes_is_down_only_once_it_missed_its_own_heartbeats()
    {
        var membership = new ClusterMembership(Microsoft.Extensions.Options.Options.Create(new MembershipOptions { HeartbeatSeconds = 2, MissedHeartbeats = 3 }));
        var sentAt = new DateTimeOffset(2026, 12, 6, 12, 0, 0, TimeSpan.Zero);
        membership.Record(Beat("edge-slow", sentAt, heartbeatSeconds: 10));
        membership.Record(Beat("edge-fast", sentAt, heartbeatSeconds: 1));
        membership.Record(Beat("edge-silent", sentAt, heartbeatSeconds: 0));

        // The slow edge's next heartbeat is due at 10 s: with the coordinator's 3 x 2 s it was down from 6 s on.
        Assert.Equal(["edge-slow"], membership.Alive(sentAt.AddSeconds(9)).Select(e => e.EdgeId));
        Assert.Equal(["edge-fast", "edge-silent", "edge-slow"], membership.Alive(sentAt.AddSeconds(5.9)).Select(e => e.EdgeId));
        Assert.Equal(["edge-slow"], membership.Alive(sentAt.AddSeconds(29.9)).Select(e => e.EdgeId));
        Assert.Empty(membership.Alive(sentAt.AddSeconds(30)));
    }

    private static DanceMoE.Contracts.EdgeHeartbeat Beat(string edge, DateTimeOffset sentAt, double heartbeatSeconds) =>
        new() { EdgeId = edge, ExecutionProvider = "cpu", HeartbeatSeconds = heartbeatSeconds, SentAt = sentAt };
}
