namespace DanceMoE.Placement.Tests;

public class WholeLayerSearchTests
{
    [Theory]
    [InlineData(2)]
    [InlineData(9)]
    [InlineData(17)]
    [InlineData(23)]
    public void The_whole_layer_start_holds_layers_whole_and_covers_every_expert_within_every_budget_or_says_none_fits(int seed)
    {
        var problem = Instances.Random(seed);
        var slots = problem.Slots();

        var placement = WholeLayerStart.Plan(problem, Steps(problem), CancellationToken.None);

        // Without one server able to hold every layer's copy, whole layers cannot cover the model: then there is no start.
        var wholeLayersThatFit = slots.Sum(s => s / problem.Model.Experts);
        Assert.Equal(wholeLayersThatFit >= problem.Model.Layers, placement is not null);
        if (placement is not null)
        {
            Assert.Empty(placement.Violations(problem.Model, problem.Cluster));
            Assert.All(
                Enumerable.Range(0, placement.Servers).SelectMany(s => Enumerable.Range(0, placement.Layers).Select(l => placement.CountLayer(s, l))),
                count => Assert.True(count == 0 || count == problem.Model.Experts));
        }
    }

    [Theory]
    [InlineData(2)]
    [InlineData(9)]
    [InlineData(17)]
    [InlineData(23)]
    [InlineData(31)]
    public void The_whole_layer_start_is_the_cheapest_whole_layer_layout_that_fits(int seed)
    {
        var problem = Instances.Random(seed);
        var (servers, layers, experts) = (problem.Cluster.Count, problem.Model.Layers, problem.Model.Experts);
        var all = (1UL << experts) - 1;
        var steps = Steps(problem);
        var caps = problem.Slots().Select(s => s / experts).ToArray();
        var seconds = Enumerable.Range(0, layers)
            .Select(l => Enumerable.Range(1, (1 << servers) - 1).Select(set => steps[l].Price([.. Enumerable.Range(0, servers).Select(s => (set & (1 << s)) != 0 ? all : 0)])).ToArray())
            .ToArray();
        var cheapest = double.PositiveInfinity;
        void Walk(int layer, int[] used, double total)
        {
            if (layer == layers)
            {
                cheapest = Math.Min(cheapest, total);
                return;
            }

            for (var set = 1; set < 1 << servers; set++)
            {
                var next = used.Select((u, s) => u + ((set >> s) & 1)).ToArray();
                if (next.Zip(caps).All(x => x.First <= x.Second))
                {
                    Walk(layer + 1, next, total + seconds[layer][set - 1]);
                }
            }
        }

        Walk(0, new int[servers], 0);

        var placement = WholeLayerStart.Plan(problem, steps, CancellationToken.None);

        Assert.Equal(double.IsFinite(cheapest), placement is not null);
        if (placement is not null)
        {
            var priced = Enumerable.Range(0, layers).Sum(l => steps[l].Price([.. Enumerable.Range(0, servers).Select(s => placement.LayerBits(s, l)[0])]));
            Assert.Equal(cheapest, priced, 9);
        }
    }

    [Fact]
    public void With_room_for_every_layer_on_every_server_the_start_holds_everything_everywhere()
    {
        var model = MoeModel.Uniform(2, 4, 2, 1_000_000, 4096);
        var cluster = Cluster.FullMesh([ServerSpec.Edge("a", 8_000_000), ServerSpec.Edge("b", 8_000_000)], LinkSpec.FromMbps(500, 2));
        var history = SyntheticWorkload.Generate(1, 2, model, 2, 10);
        var problem = new PlacementProblem(model, cluster, ActivationCounts.FromWorkload(2, model, history)) { History = history };

        var placement = WholeLayerStart.Plan(problem, Steps(problem), CancellationToken.None);

        Assert.NotNull(placement);
        Assert.Equal(16, placement.TotalReplicas);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(9)]
    [InlineData(17)]
    public void The_exchange_search_never_models_the_history_slower_and_keeps_every_expert_covered_within_budgets(int seed)
    {
        var problem = Instances.Random(seed);
        var placement = new OptimalPlacement().Place(problem);
        var model = new LatencyModel(problem.Model, problem.Cluster, problem.Latency);
        var before = model.MeanLatencyMsWithoutQueueing(placement, problem.History!);

        SlotExchangeSearch.Improve(problem, placement, Steps(problem), () => false, CancellationToken.None);

        Assert.True(model.MeanLatencyMsWithoutQueueing(placement, problem.History!) <= before + 1e-9);
        Assert.Empty(placement.Violations(problem.Model, problem.Cluster));
    }

    [Theory]
    [InlineData(5)]
    [InlineData(11)]
    public void The_exchange_search_from_the_whole_layer_start_is_deterministic_and_ends_where_no_single_toggle_or_free_slot_helps(int seed)
    {
        var problem = Instances.Random(seed);
        var start = WholeLayerStart.Plan(problem, Steps(problem), CancellationToken.None) ?? new OptimalPlacement().Place(problem);
        var first = start.Clone();
        var second = start.Clone();
        var steps = Steps(problem);

        SlotExchangeSearch.Improve(problem, first, steps, () => false, CancellationToken.None);
        SlotExchangeSearch.Improve(problem, second, Steps(problem), () => false, CancellationToken.None);

        Assert.True(first.SameAs(second));
        Assert.Empty(first.Violations(problem.Model, problem.Cluster));

        // No drop of a spare replica, and no add into a free slot, makes the history faster at the end.
        var slots = problem.Slots();
        for (var l = 0; l < problem.Model.Layers; l++)
        {
            var holds = Enumerable.Range(0, first.Servers).Select(s => first.LayerBits(s, l)[0]).ToArray();
            var now = steps[l].Price(holds);
            for (var s = 0; s < first.Servers; s++)
            {
                for (var e = 0; e < problem.Model.Experts; e++)
                {
                    var adding = !first.Holds(s, l, e);
                    if ((adding && first.Count(s) >= slots[s]) || (!adding && first.Replicas(l, e) < 2))
                    {
                        continue;
                    }

                    holds[s] ^= 1UL << e;
                    Assert.True(steps[l].Price(holds) >= now - 1e-9);
                    holds[s] ^= 1UL << e;
                }
            }
        }
    }

    [Fact]
    public void The_exchange_search_gives_a_slot_its_server_never_uses_to_an_expert_it_needs()
    {
        // Server a's requests use experts 0 and 1, which a lacks; b holds every expert. Trading makes them local.
        var model = MoeModel.Uniform(1, 4, 2, 1_000_000, 1000);
        var cluster = Cluster.FullMesh(
            [new ServerSpec("a", 2_000_000, 1e15, 1e9), new ServerSpec("b", 4_000_000, 1e15, 1e9)],
            new LinkSpec(1e6, 0.002));
        var history = new Workload([new TraceRequest(0, 3, [[0, 1, 0, 1, 0, 1]])]);
        var problem = new PlacementProblem(model, cluster, ActivationCounts.FromWorkload(2, model, history)) { History = history, Latency = new LatencyOptions { DecodeTokens = 2 } };
        var placement = new ExpertPlacement(2, 1, 4);
        placement.Add(0, 0, 2);
        placement.Add(0, 0, 3);
        for (var e = 0; e < 4; e++)
        {
            placement.Add(1, 0, e);
        }

        SlotExchangeSearch.Improve(problem, placement, Steps(problem), () => false, CancellationToken.None);

        Assert.True(placement.Holds(0, 0, 0) && placement.Holds(0, 0, 1));
        Assert.Empty(placement.Violations(model, cluster));
    }

    private static LayerSteps[] Steps(PlacementProblem problem) =>
        [.. Enumerable.Range(0, problem.Model.Layers).Select(l => new LayerSteps(problem, l, problem.History!.Requests))];
}
