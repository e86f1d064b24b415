using DanceMoE.Contracts;
using DanceMoE.Edge;

namespace DanceMoE.EndToEndTests;

public sealed class ReplicaPlannerTests
{
    private const string Self = "edge-self";
    private const int Layer = 2;

    [Fact]
    public void Equal_estimates_give_the_same_choice_whatever_the_order_of_the_experts()
    {
        var placement = Placement((0, ["a", "b", "c"]), (1, ["b", "c"]), (2, ["c", "a"]), (3, ["a", "b"]), (4, ["a", "b", "c"]));
        ExpertDemand[] needed = [new(0, 3), new(1, 3), new(2, 5), new(3, 1), new(4, 3)];

        var first = ReplicaPlanner.Choose(placement, Layer, needed, Self, null, new PeerEstimates());
        var reversed = ReplicaPlanner.Choose(placement, Layer, needed.Reverse(), Self, null, new PeerEstimates());
        var measuredEqually = new PeerEstimates();
        foreach (var peer in new[] { "c", "a", "b" })
        {
            measuredEqually.Observe(peer, TimeSpan.FromMilliseconds(7));
        }

        var measured = ReplicaPlanner.Choose(placement, Layer, needed, Self, null, measuredEqually);

        Assert.Equal(needed.Select(d => d.Expert).Order(), first.Keys.Order());
        Assert.Equal(first.OrderBy(kv => kv.Key), reversed.OrderBy(kv => kv.Key));
        Assert.Equal(first.OrderBy(kv => kv.Key), measured.OrderBy(kv => kv.Key));
    }

    [Fact]
    public void A_slow_peer_is_avoided_when_another_replica_exists()
    {
        var placement = Placement((0, ["slow", "fast"]), (1, ["fast", "slow"]));
        var estimates = new PeerEstimates();
        estimates.Observe("slow", TimeSpan.FromMilliseconds(80));
        estimates.Observe("fast", TimeSpan.FromMilliseconds(4));

        var chosen = ReplicaPlanner.Choose(placement, Layer, [new(0, 4), new(1, 4)], Self, null, estimates);

        Assert.Equal("fast", chosen[0]);
        Assert.Equal("fast", chosen[1]);
    }

    [Fact]
    public void A_peer_that_reports_a_long_queue_is_avoided_when_another_replica_exists()
    {
        var placement = Placement((0, ["busy", "idle"]));
        var estimates = new PeerEstimates();
        estimates.Observe("busy", TimeSpan.FromMilliseconds(5));
        estimates.Observe("idle", TimeSpan.FromMilliseconds(6));
        var before = ReplicaPlanner.Choose(placement, Layer, [new(0, 4)], Self, null, estimates);

        estimates.ObserveQueueDepth("busy", 10);
        var after = ReplicaPlanner.Choose(placement, Layer, [new(0, 4)], Self, null, estimates);

        Assert.Equal("busy", before[0]);
        Assert.Equal("idle", after[0]);
    }

    [Fact]
    public void Load_spreads_so_the_slowest_peer_costs_less_than_with_all_experts_on_the_fastest()
    {
        var experts = Enumerable.Range(0, 10).ToArray();
        string[] replicas = ["fast", "slower"];
        var placement = Placement([.. experts.Select(e => (e, replicas))]);
        var estimates = new PeerEstimates();
        estimates.Observe("fast", TimeSpan.FromMilliseconds(5));
        estimates.Observe("slower", TimeSpan.FromMilliseconds(20));
        var needed = experts.Select(e => new ExpertDemand(e, 100)).ToList();

        var chosen = ReplicaPlanner.Choose(placement, Layer, needed, Self, null, estimates);

        var plan = StepCostMs(chosen, needed, estimates);
        var allOnFast = StepCostMs(experts.ToDictionary(e => e, _ => "fast"), needed, estimates);
        Assert.True(plan < allOnFast, $"step cost {plan} ms with the plan, {allOnFast} ms with every expert on the fastest peer");
        Assert.True(chosen.Values.Count(p => p == "fast") > chosen.Values.Count(p => p == "slower"));
    }

    [Fact]
    public void Equal_peers_share_equal_experts()
    {
        var experts = Enumerable.Range(0, 6).ToArray();
        string[] replicas = ["a", "b", "c"];
        var placement = Placement([.. experts.Select(e => (e, replicas))]);

        var chosen = ReplicaPlanner.Choose(placement, Layer, [.. experts.Select(e => new ExpertDemand(e, 8))], Self, null, new PeerEstimates());

        Assert.All(chosen.Values.CountBy(p => p), kv => Assert.Equal(2, kv.Value));
    }

    [Fact]
    public void A_failed_peer_is_avoided_until_it_answers_again()
    {
        var placement = Placement((0, ["a", "b"]));
        var estimates = new PeerEstimates();
        estimates.Observe("a", TimeSpan.FromMilliseconds(3));
        estimates.Observe("b", TimeSpan.FromMilliseconds(30));
        estimates.Failed("a");

        var whileFailed = ReplicaPlanner.Choose(placement, Layer, [new(0, 1)], Self, null, estimates);
        estimates.Observe("a", TimeSpan.FromMilliseconds(3));
        var afterAnswer = ReplicaPlanner.Choose(placement, Layer, [new(0, 1)], Self, null, estimates);

        Assert.Equal("b", whileFailed[0]);
        Assert.Equal("a", afterAnswer[0]);
    }

    [Fact]
    public void When_every_replica_failed_the_one_that_failed_longest_ago_is_chosen()
    {
        var placement = Placement((0, ["a", "b"]));
        var estimates = new PeerEstimates();
        estimates.Failed("b");
        estimates.Failed("a");
        var first = ReplicaPlanner.Choose(placement, Layer, [new(0, 1)], Self, null, estimates);

        estimates.Failed("b");
        var second = ReplicaPlanner.Choose(placement, Layer, [new(0, 1)], Self, null, estimates);

        Assert.Equal("b", first[0]);
        Assert.Equal("a", second[0]);
    }

    [Fact]
    public void An_expert_with_one_replica_goes_to_it_even_when_slow_and_failed()
    {
        var placement = Placement((0, ["only"]), (1, ["only", "other"]));
        var estimates = new PeerEstimates();
        estimates.Observe("only", TimeSpan.FromMilliseconds(90));
        estimates.Observe("other", TimeSpan.FromMilliseconds(10));
        estimates.Failed("only");

        var chosen = ReplicaPlanner.Choose(placement, Layer, [new(0, 2), new(1, 2)], Self, null, estimates);

        Assert.Equal("only", chosen[0]);
        Assert.Equal("other", chosen[1]);
    }

    [Fact]
    public void The_excluded_peer_is_never_chosen_and_an_expert_only_it_holds_has_no_choice()
    {
        var placement = Placement((0, ["failing", "other"]), (1, ["failing"]));
        var estimates = new PeerEstimates();
        estimates.Observe("failing", TimeSpan.FromMilliseconds(1));
        estimates.Observe("other", TimeSpan.FromMilliseconds(50));

        var chosen = ReplicaPlanner.Choose(placement, Layer, [new(0, 1), new(1, 1)], Self, "failing", estimates);

        Assert.Equal("other", chosen[0]);
        Assert.False(chosen.ContainsKey(1));
    }

    [Fact]
    public void This_edge_is_never_chosen_even_when_the_placement_lists_it_first()
    {
        var placement = Placement((0, [Self, "peer"]), (1, [Self]));
        var estimates = new PeerEstimates();
        estimates.Observe(Self, TimeSpan.Zero);
        estimates.Observe("peer", TimeSpan.FromMilliseconds(40));

        var chosen = ReplicaPlanner.Choose(placement, Layer, [new(0, 1), new(1, 1)], Self, null, estimates);

        Assert.Equal("peer", chosen[0]);
        Assert.False(chosen.ContainsKey(1));
    }

    [Fact]
    public void Unmeasured_peers_are_estimated_at_the_mean_of_the_measured_ones()
    {
        var estimates = new PeerEstimates();
        Assert.Equal(PeerEstimates.UnmeasuredMs, estimates.EstimateMs("x"));

        estimates.Observe("a", TimeSpan.FromMilliseconds(10));
        estimates.Observe("b", TimeSpan.FromMilliseconds(30));
        estimates.Observe("b", TimeSpan.FromMilliseconds(40));

        var b = 30 + (PeerEstimates.Smoothing * (40 - 30));
        Assert.Equal(b, estimates.EstimateMs("b"), 9);
        Assert.Equal((10 + b) / 2, estimates.EstimateMs("x"), 9);
        Assert.Equal(estimates.EstimateMs("x"), estimates.EstimateMs("y"));
    }

    private static double StepCostMs(IReadOnlyDictionary<int, string> chosen, IReadOnlyList<ExpertDemand> needed, PeerEstimates estimates) =>
        chosen.GroupBy(kv => kv.Value)
            .Max(g => estimates.EstimateMs(g.Key) + (ReplicaPlanner.RowMs * g.Sum(kv => needed.Single(d => d.Expert == kv.Key).Rows)));

    private static EdgePlacement Placement(params (int Expert, string[] Servers)[] experts) =>
        new(1, experts.Select(e => new ExpertAssignment { Layer = Layer, Expert = e.Expert, Servers = e.Servers }));
}
