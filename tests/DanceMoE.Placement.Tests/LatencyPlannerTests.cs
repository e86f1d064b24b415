namespace DanceMoE.Placement.Tests;

public class LatencyPlannerTests
{
    [Fact]
    public void Without_history_the_planner_returns_the_optimum()
    {
        var problem = Instances.Random(5) with { History = null };
        Assert.True(new LatencyPlacement().Place(problem).SameAs(new OptimalPlacement().Place(problem)));
    }

    [Theory]
    [InlineData(2)]
    [InlineData(9)]
    [InlineData(17)]
    public void The_owner_seed_covers_every_expert_within_every_budget(int seed)
    {
        var problem = Instances.Random(seed);
        var placement = LatencyPlacement.OwnerSeed(problem, new LocalSearch(problem, 0));
        Assert.Empty(placement.Violations(problem.Model, problem.Cluster));
    }

    [Fact]
    public void When_decode_dominates_whole_layers_beat_slots_spread_by_frequency()
    {
        // Two servers, each with room for exactly one whole layer plus nothing else; both use every expert evenly.
        var model = MoeModel.Uniform(2, 8, 4, 1_000_000, 4096);
        var cluster = Cluster.FullMesh([ServerSpec.Edge("a", 8_000_000), ServerSpec.Edge("b", 8_000_000)], LinkSpec.FromMbps(500, 2));
        var history = SyntheticWorkload.Generate(3, 2, model, 4, 40, skew: 0.2);
        var problem = new PlacementProblem(model, cluster, ActivationCounts.FromWorkload(2, model, history))
        {
            History = history,
            Latency = new LatencyOptions { DecodeTokens = 39 },
        };
        var latencyModel = new LatencyModel(model, cluster, problem.Latency);
        var planned = new LatencyPlacement().Place(problem);
        var optimal = new OptimalPlacement().Place(problem);
        Assert.True(latencyModel.Evaluate(planned, history).DecodeMsPerToken < latencyModel.Evaluate(optimal, history).DecodeMsPerToken);
        Assert.Contains(Enumerable.Range(0, 2), l => planned.CountLayer(0, l) == 8 || planned.CountLayer(1, l) == 8);
    }

    [Fact]
    public void With_its_time_budget_spent_the_planner_returns_its_better_seed_unimproved()
    {
        var problem = Instances.Random(9);
        var search = new LocalSearch(problem, maxMoves: 0);
        var seeds = new[] { new OptimalPlacement().Place(problem), LatencyPlacement.OwnerSeed(problem, search) };

        var early = new LatencyPlacement { TimeBudget = TimeSpan.Zero }.Place(problem);
        var full = new LatencyPlacement().Place(problem);

        Assert.Contains(seeds, early.SameAs);
        Assert.Equal(seeds.Min(search.Seconds), search.Seconds(early));
        Assert.DoesNotContain(seeds, full.SameAs);
        Assert.True(search.Seconds(full) < search.Seconds(early));
    }

    [Fact]
    public void Synthetic_workloads_are_reproducible_from_their_seed()
    {
        var model = MoeModel.Uniform(3, 16, 2, 1, 1);
        var a = SyntheticWorkload.Generate(42, 2, model, 2, 5);
        var b = SyntheticWorkload.Generate(42, 2, model, 2, 5);
        Assert.Equal(a.Requests.SelectMany(r => r.Experts.SelectMany(x => x)), b.Requests.SelectMany(r => r.Experts.SelectMany(x => x)));
        Assert.All(a.Requests.SelectMany(r => r.Experts), layer => Assert.Equal(5 * 2, layer.Length));
    }

    [Fact]
    public void Activation_counts_add_up_every_token_of_every_layer()
    {
        var model = MoeModel.Uniform(2, 4, 2, 1, 1);
        var workload = new Workload([new TraceRequest(1, 2, [[0, 1, 0, 2], [3, 2, 1, 0]])]);
        var counts = ActivationCounts.FromWorkload(2, model, workload);
        Assert.Equal(2, counts[1, 0, 0]);
        Assert.Equal(1, counts[1, 1, 3]);
        Assert.Equal(0, counts[0, 0, 0]);
        Assert.Equal(8, counts.Total);
    }
}
