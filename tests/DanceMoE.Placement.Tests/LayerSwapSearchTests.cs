namespace DanceMoE.Placement.Tests;

public class LayerSwapSearchTests
{
    [Fact]
    public void A_server_swaps_an_expert_its_requests_never_use_for_one_they_need()
    {
        // Server a's requests use experts 0 and 1, which a lacks; b holds every expert. Swapping makes them local.
        var model = MoeModel.Uniform(1, 4, 2, 1_000_000, 1000);
        var cluster = Cluster.FullMesh(
            [new ServerSpec("a", 2_000_000, 1e15, 1e9), new ServerSpec("b", 4_000_000, 1e15, 1e9)],
            new LinkSpec(1e6, 0.002));
        var history = new Workload([new TraceRequest(0, 3, [[0, 1, 0, 1, 0, 1]])]);
        var activations = ActivationCounts.FromWorkload(2, model, history);
        var problem = new PlacementProblem(model, cluster, activations) { History = history, Latency = new LatencyOptions { DecodeTokens = 2 } };
        var placement = new ExpertPlacement(2, 1, 4);
        placement.Add(0, 0, 2);
        placement.Add(0, 0, 3);
        for (var e = 0; e < 4; e++)
        {
            placement.Add(1, 0, e);
        }

        LayerSwapSearch.Improve(problem, placement, () => false, CancellationToken.None);

        Assert.True(placement.Holds(0, 0, 0) && placement.Holds(0, 0, 1));
        Assert.Equal(2, placement.Count(0));
        Assert.Empty(placement.Violations(model, cluster));
    }

    [Theory]
    [InlineData(2)]
    [InlineData(9)]
    public void The_search_never_models_the_history_slower_and_keeps_every_expert_covered_within_budgets(int seed)
    {
        var problem = Instances.Random(seed);
        var placement = new OptimalPlacement().Place(problem);
        var model = new LatencyModel(problem.Model, problem.Cluster, problem.Latency);
        var before = model.MeanLatencyMsWithoutQueueing(placement, problem.History!);

        LayerSwapSearch.Improve(problem, placement, () => false, CancellationToken.None);

        Assert.True(model.MeanLatencyMsWithoutQueueing(placement, problem.History!) <= before);
        Assert.Empty(placement.Violations(problem.Model, problem.Cluster));
    }
}
