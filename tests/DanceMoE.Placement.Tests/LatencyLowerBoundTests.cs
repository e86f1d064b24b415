namespace DanceMoE.Placement.Tests;

public class LatencyLowerBoundTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public void Max_closure_matches_every_subset_tried(int seed)
    {
        var random = new Random(seed);
        const int experts = 7;
        var projects = Enumerable.Range(0, 12)
            .Select(_ => ((ulong)random.Next(1, 1 << experts), random.NextDouble() * 3))
            .ToList();
        var prices = Enumerable.Range(0, experts).Select(_ => (random.NextDouble() * 2) - 0.3).ToArray();
        var (value, bought) = new MaxClosure(experts, projects).Solve(prices);

        var best = double.MinValue;
        for (var set = 0UL; set < 1 << experts; set++)
        {
            var profit = projects.Where(p => (p.Item1 & ~set) == 0).Sum(p => p.Item2);
            var cost = Enumerable.Range(0, experts).Where(e => ((set >> e) & 1) != 0).Sum(e => prices[e]);
            best = Math.Max(best, profit - cost);
        }

        Assert.Equal(best, value, 9);
        var boughtProfit = projects.Where(p => (p.Item1 & ~bought) == 0).Sum(p => p.Item2);
        var boughtCost = Enumerable.Range(0, experts).Where(e => ((bought >> e) & 1) != 0).Sum(e => prices[e]);
        Assert.Equal(best, boughtProfit - boughtCost, 9);
    }

    [Theory]
    [InlineData(0.0, 5.0)]
    [InlineData(1.0, 6.0)]
    public void One_server_with_two_slots_holds_the_prompts_experts_when_that_saves_more(double messageMs, double boundMs)
    {
        // A row of 1000 B at 1 MB/s: 1 ms; RTT 2 ms; an expert 1 ms. Prompt {0,1}, decode {2,3}; a remote token sends its row
        // and gets at least one back (the sum, from a peer that holds all its experts). Holding {0,1}: the decode step pays
        // 2 + 2 + 1 ms at least. Holding {2,3}: decode 2 ms, prompt 2 + 2 ms. Bound 5 ms, and the bus's work on the decode
        // step's message when it costs any.
        var model = MoeModel.Uniform(1, 4, 2, 1_000_000, 1000);
        var cluster = Cluster.FullMesh(
            [new ServerSpec("a", 2_000_000, 1e15, 1e9), new ServerSpec("b", 4_000_000, 1e15, 1e9)],
            new LinkSpec(1e6, 0.002));
        var problem = new PlacementProblem(model, cluster, new ActivationCounts(2, 1, 4)) { Latency = new LatencyOptions { DecodeTokens = 1, MessageSeconds = messageMs / 1e3 } };
        var workload = new Workload([new TraceRequest(0, 2, [[0, 1, 2, 3]])]);

        Assert.Equal(boundMs, LatencyLowerBound.MeanLatencyMs(problem, workload)!.Value, 6);
    }

    public static TheoryData<int, bool> Problems()
    {
        var data = new TheoryData<int, bool>();
        foreach (var seed in Enumerable.Range(1, 12))
        {
            data.Add(seed, false);
        }

        foreach (var seed in (int[])[2, 4, 5, 9])
        {
            data.Add(seed, true);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Problems))]
    public void No_algorithm_models_under_the_bound_on_the_requests_it_planned_from(int seed, bool unequalSizes)
    {
        var problem = Instances.Random(seed, unequalSizes);
        var model = new LatencyModel(problem.Model, problem.Cluster, problem.Latency);
        var bound = LatencyLowerBound.MeanLatencyMs(problem, problem.History!)!.Value;

        Assert.True(bound > 0);
        foreach (var algorithm in PlacementAlgorithms.All)
        {
            var latency = model.Evaluate(algorithm.Place(problem), problem.History!).LatencyMsMean;
            Assert.True(bound <= latency + 1e-9, $"{algorithm.Name}: {latency} ms under the bound {bound} ms");
        }
    }

    [Fact]
    public void The_bound_is_not_computed_beyond_64_experts_per_layer()
    {
        var model = MoeModel.Uniform(1, 65, 2, 1, 1000);
        var cluster = Cluster.FullMesh([ServerSpec.Edge("a", 100)], LinkSpec.FromMbps(500, 2));
        var problem = new PlacementProblem(model, cluster, new ActivationCounts(1, 1, 65));

        Assert.Null(LatencyLowerBound.MeanLatencyMs(problem, new Workload([])));
    }
}
