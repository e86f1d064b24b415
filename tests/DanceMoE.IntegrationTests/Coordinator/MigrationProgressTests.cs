using DanceMoE.Contracts;
using DanceMoE.Coordinator;
using DanceMoE.Coordinator.Saga;

namespace DanceMoE.IntegrationTests.Coordinator;

public sealed class MigrationProgressTests
{
    private static ExpertMove Move(string action, string edge, int layer, int expert) => new() { Action = action, EdgeId = edge, Layer = layer, Expert = expert };

    [Fact]
    public void Before_a_run_of_unloads_the_edges_route_by_every_loaded_replica_less_the_ones_dropped()
    {
        ExpertMove[] moves = [Move("load", "b", 0, 0), Move("unload", "a", 0, 0), Move("unload", "a", 0, 1), Move("load", "a", 0, 2)];
        string[] routed = ["a/0/0", "a/0/1", "b/0/1", "b/0/2"];

        var next = MigrationProgress.RoutingBeforeUnloads(moves, 1, routed, ["b/0/0"]);

        Assert.Equal(["b/0/0", "b/0/1", "b/0/2"], next);
    }

    [Fact]
    public void An_unload_that_would_leave_an_expert_without_a_replica_is_refused()
    {
        ExpertMove[] moves = [Move("unload", "a", 1, 3)];

        var error = Assert.Throws<InvalidOperationException>(() => MigrationProgress.RoutingBeforeUnloads(moves, 0, ["a/1/3", "b/1/2"], []));

        Assert.Contains("expert 1.3 from a would leave it without a replica", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Compensation_drops_the_replicas_the_migration_loaded_but_never_an_experts_last_one()
    {
        // b/0/0 was loaded and a/0/0 already unloaded: b's copy is the only one left and stays.
        var fallback = MigrationProgress.Fallback(["b/0/0", "a/0/1", "b/0/1"], ["b/0/0", "b/0/1"]);

        Assert.Equal(["a/0/1", "b/0/0"], fallback);
    }

    [Fact]
    public void Replicas_round_trip_through_assignments_and_json()
    {
        var assignments = new[] { new ExpertAssignment { Layer = 1, Expert = 2, Servers = ["edge-b", "edge-a"] }, new ExpertAssignment { Layer = 0, Expert = 5, Servers = ["edge-a"] } };

        var replicas = MigrationProgress.Replicas(MigrationProgress.Serialize(MigrationProgress.Replicas(assignments)));
        var back = MigrationProgress.Assignments(replicas);

        Assert.Equal(["edge-a/0/5", "edge-a/1/2", "edge-b/1/2"], replicas);
        Assert.Equal([(0, 5, "edge-a"), (1, 2, "edge-a,edge-b")], back.Select(a => (a.Layer, a.Expert, string.Join(',', a.Servers))));
    }

    [Fact]
    public void The_invariants_want_every_expert_on_a_live_edge_and_no_edge_over_its_budget()
    {
        var model = new PlacementJobOptions { Layers = 1, Experts = 3, ExpertBytes = 100 };
        var edges = new[] { Edge("a", 200), Edge("b", 100) };
        ExpertAssignment[] good = [Assign(0, "a"), Assign(1, "a"), Assign(2, "b")];
        ExpertAssignment[] bad = [Assign(0, "a", "b"), Assign(1, "a", "b"), Assign(2, "down")];

        Assert.Empty(PlacementInvariants.Check(good, model, edges));
        Assert.Equal(
            ["expert 0.2 has no replica on a live edge", "b would hold 2 experts (200 bytes), over its budget of 100 bytes"],
            PlacementInvariants.Check(bad, model, edges));
    }

    private static ExpertAssignment Assign(int expert, params string[] servers) => new() { Layer = 0, Expert = expert, Servers = servers };

    private static EdgeMember Edge(string id, long budget) =>
        new(id, budget, 0, new HashSet<string>(), 0, DateTimeOffset.UtcNow, true);
}
