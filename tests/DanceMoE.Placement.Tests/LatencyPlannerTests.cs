using System.Numerics;

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
    public void With_its_time_budget_spent_the_planner_still_covers_every_expert_within_every_budget(int seed)
    {
        var problem = Instances.Random(seed);
        var placement = new LatencyPlacement { TimeBudget = TimeSpan.Zero }.Place(problem);
        Assert.Empty(placement.Violations(problem.Model, problem.Cluster));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void The_knapsack_picks_the_cheapest_option_per_layer_within_the_capacity(int seed)
    {
        var random = new Random(seed);
        var options = Enumerable.Range(0, 3)
            .Select(_ => Enumerable.Range(0, 4)
                .Select(i => new LayerSlotPlanner.Option([], i == 0 ? 0 : random.Next(0, 5), 0, random.NextDouble()))
                .OrderBy(o => o.Slots)
                .ToArray())
            .ToArray();

        var capacity = random.Next(0, 9);
        var brute = (from a in options[0] from b in options[1] from c in options[2]
                     where a.Slots + b.Slots + c.Slots <= capacity
                     select a.Priced + b.Priced + c.Priced).Min();

        var chosen = LayerSlotPlanner.Knapsack(options, capacity);

        Assert.True(chosen.Sum(o => o.Slots) <= capacity);
        Assert.Equal(brute, chosen.Sum(o => o.Priced), 9);
    }

    [Fact]
    public void A_column_orders_every_expert_once_most_activated_first_and_holding_more_of_it_never_models_slower()
    {
        var problem = Instances.Random(9);
        var requests = problem.History!.Requests.Where(r => r.Server == 0).ToList();

        var column = new LayerSlotPlanner.Column(problem, 0, 1, requests);

        Assert.Equal(Enumerable.Range(0, problem.Model.Experts), column.Order.Order());
        Assert.All(column.Order.Zip(column.Order.Skip(1)), pair => Assert.True(problem.Activations[0, 1, pair.First] >= problem.Activations[0, 1, pair.Second]));
        Assert.All(Enumerable.Range(1, problem.Model.Experts), k => Assert.True(column.PrefixCost[k] <= column.PrefixCost[k - 1] + 1e-12));
        Assert.True(column.PrefixCost[^1] < column.PrefixCost[0]);
    }

    [Fact]
    public void A_columns_options_include_covering_what_no_other_server_holds_and_cost_less_with_more_slots()
    {
        var problem = Instances.Random(9);
        var experts = problem.Model.Experts;
        var column = new LayerSlotPlanner.Column(problem, 0, 1, problem.History!.Requests.Where(r => r.Server == 0).ToList());
        var others = new[] { 0b1010UL };

        var options = column.Options(others, price: 1e-4);

        Assert.All(options, o => Assert.Equal(o.Slots, BitOperations.PopCount(o.Set[0])));
        Assert.Contains(options, o => (o.Set[0] | others[0]) == (1UL << experts) - 1);
        Assert.All(options.Skip(1).Zip(options), pair => Assert.True(pair.First.Slots > pair.Second.Slots && pair.First.Priced < pair.Second.Priced));
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
