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
        var membership = NewMembership();
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

    [Fact]
    public void After_a_restart_warm_up_lasts_until_an_edge_the_database_knew_alive_is_heard_or_has_missed_its_own_heartbeats()
    {
        var clock = new ManualClock();
        var membership = NewMembership(clock);
        var start = clock.GetUtcNow();
        membership.ExpectKnownEdges(
        [
            new KnownEdge("edge-slow", start.AddSeconds(-20), 30),
            new KnownEdge("edge-fast", start.AddSeconds(-1), 2),
            // Last heard 3 x 30 s before the newest record, when it was down already: nothing to wait for.
            new KnownEdge("edge-gone", start.AddSeconds(-91), 30),
        ]);

        Assert.False(membership.IsWarm(start.AddSeconds(5.9)));
        Assert.False(membership.IsWarm(start.AddSeconds(6)), "edge-slow beats every 30 s: 6 s is too soon to miss it");
        Assert.False(membership.IsWarm(start.AddSeconds(89.9)));
        Assert.True(membership.IsWarm(start.AddSeconds(90)));

        membership.Record(Beat("edge-slow", start.AddSeconds(12), heartbeatSeconds: 30));
        Assert.False(membership.IsWarm(start.AddSeconds(5.9)), "the coordinator's own interval still holds for edges the database never saw");
        Assert.True(membership.IsWarm(start.AddSeconds(6)));
    }

    [Fact]
    public void An_interval_recorded_beyond_the_most_an_edge_may_beat_is_waited_for_only_up_to_that_most()
    {
        var clock = new ManualClock();
        var membership = NewMembership(clock);
        var start = clock.GetUtcNow();
        membership.ExpectKnownEdges([new KnownEdge("edge-odd", start, 1e9)]);

        Assert.False(membership.IsWarm(start.AddSeconds((3 * MembershipOptions.MaxHeartbeatSeconds) - 1)));
        Assert.True(membership.IsWarm(start.AddSeconds(3 * MembershipOptions.MaxHeartbeatSeconds)));
    }

    [Fact]
    public async Task Warm_up_ends_as_soon_as_every_edge_the_database_knew_alive_is_heard()
    {
        var clock = new ManualClock();
        var membership = NewMembership(clock);
        var start = clock.GetUtcNow();
        membership.ExpectKnownEdges([new KnownEdge("edge-slow", start.AddSeconds(-5), 600)]);
        clock.Advance(TimeSpan.FromSeconds(10));

        var warm = membership.WaitUntilWarmAsync(TimeSpan.FromHours(1), CancellationToken.None);
        await Task.Delay(500);
        Assert.False(warm.IsCompleted, "warm before edge-slow was heard or could have missed 3 of its 600 s heartbeats");

        Assert.Equal(["edge-slow"], membership.NotHeardYet());
        membership.Record(Beat("edge-slow", clock.GetUtcNow(), heartbeatSeconds: 600));
        Assert.True(await warm.WaitAsync(TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task Warm_up_gives_up_at_the_most_the_caller_can_wait_and_says_so()
    {
        var clock = new ManualClock();
        var membership = NewMembership(clock);
        var start = clock.GetUtcNow();
        // It said it beats hourly and may be gone: three missed heartbeats would hold a placement for three hours.
        membership.ExpectKnownEdges([new KnownEdge("edge-hourly", start, 3600)]);

        var warm = membership.WaitUntilWarmAsync(TimeSpan.FromSeconds(12), CancellationToken.None);
        clock.Advance(TimeSpan.FromSeconds(11));
        await Task.Delay(300);
        Assert.False(warm.IsCompleted, "gave up before its 12 s");
        clock.Advance(TimeSpan.FromSeconds(1));

        Assert.False(await warm.WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.Equal(["edge-hourly"], membership.NotHeardYet());

        // A migration's short warm-up gives up for itself only: the placement job still waits for the edge.
        Assert.False(membership.IsWarm(clock.GetUtcNow()));
    }

    [Fact]
    public async Task An_edge_a_wait_gave_up_on_is_not_waited_for_again()
    {
        var clock = new ManualClock();
        var membership = NewMembership(clock);
        var start = clock.GetUtcNow();
        membership.ExpectKnownEdges([new KnownEdge("edge-hourly", start, 3600)]);

        var first = membership.WaitForKnownEdgesAsync(TimeSpan.FromSeconds(60), CancellationToken.None);
        await Task.Delay(300);
        Assert.False(first.IsCompleted, "gave up before its 60 s");
        clock.Advance(TimeSpan.FromSeconds(60));
        Assert.False(await first.WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.Equal(["edge-hourly"], membership.NotHeardYet());

        // The next placement run, and a migration's warm-up, go on at once; the edge is still named as not heard.
        Assert.True(await membership.WaitForKnownEdgesAsync(TimeSpan.FromSeconds(60), CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.True(membership.IsWarm(clock.GetUtcNow()));
        Assert.Equal(["edge-hourly"], membership.NotHeardYet());
        membership.Record(Beat("edge-hourly", clock.GetUtcNow(), heartbeatSeconds: 3600));
        Assert.Empty(membership.NotHeardYet());
        Assert.Equal(["edge-hourly"], membership.Alive(clock.GetUtcNow()).Select(e => e.EdgeId));
    }

    [Fact]
    public async Task Waiting_for_known_edges_leaves_out_the_coordinators_own_missed_heartbeats()
    {
        var clock = new ManualClock();
        var membership = NewMembership(clock);
        Assert.True(await membership.WaitForKnownEdgesAsync(TimeSpan.FromHours(1), CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(5)));

        membership.ExpectKnownEdges([new KnownEdge("edge-slow", clock.GetUtcNow(), 30)]);
        var known = membership.WaitForKnownEdgesAsync(TimeSpan.FromHours(1), CancellationToken.None);
        await Task.Delay(300);
        Assert.False(known.IsCompleted, "edge-slow was neither heard nor past its own missed heartbeats");
        clock.Advance(TimeSpan.FromSeconds(90));
        Assert.True(await known.WaitAsync(TimeSpan.FromSeconds(5)));
    }

    /// <summary>A coordinator's membership that counts an edge down after 3 missed heartbeats of 2 s.</summary>
    private static ClusterMembership NewMembership(TimeProvider? clock = null) =>
        new(Microsoft.Extensions.Options.Options.Create(new MembershipOptions { HeartbeatSeconds = 2, MissedHeartbeats = 3 }), clock);

    private static DanceMoE.Contracts.EdgeHeartbeat Beat(string edge, DateTimeOffset sentAt, double heartbeatSeconds) =>
        new() { EdgeId = edge, ExecutionProvider = "cpu", HeartbeatSeconds = heartbeatSeconds, SentAt = sentAt };
}
