namespace DanceMoE.Placement.Tests;

public class AlgorithmPropertyTests
{
    public static TheoryData<int> Seeds => [.. Enumerable.Range(1, 25)];

    [Theory]
    [MemberData(nameof(Seeds))]
    public void Every_algorithm_covers_every_expert_within_every_budget(int seed)
    {
        var problem = Instances.Random(seed);
        foreach (var algorithm in PlacementAlgorithms.All)
        {
            var placement = algorithm.Place(problem);
            Assert.True(placement.Violations(problem.Model, problem.Cluster).Count == 0,
                $"{algorithm.Name}: {string.Join("; ", placement.Violations(problem.Model, problem.Cluster))}");
        }
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void Optimal_is_never_beaten_on_the_papers_objective(int seed)
    {
        var problem = Instances.Random(seed);
        var optimal = Instances.LocalActivations(problem, new OptimalPlacement().Place(problem));
        foreach (var algorithm in PlacementAlgorithms.All)
        {
            var value = Instances.LocalActivations(problem, algorithm.Place(problem));
            Assert.True(value <= optimal + 1e-9, $"{algorithm.Name} serves {value} locally, optimal {optimal}");
        }
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void Algorithms_are_deterministic(int seed)
    {
        var problem = Instances.Random(seed);
        foreach (var algorithm in PlacementAlgorithms.All)
        {
            Assert.True(algorithm.Place(problem).SameAs(algorithm.Place(problem)), algorithm.Name);
        }
    }

    [Theory]
    [InlineData(3)]
    [InlineData(11)]
    [InlineData(19)]
    public void Unequal_sizes_are_solved_exactly_by_the_ilp_and_every_algorithm_fits_in_bytes(int seed)
    {
        var problem = Instances.Random(seed, unequalSizes: true);
        var solution = new OptimalPlacement().Solve(problem);
        var placement = solution.Placement;
        Assert.True(solution.ProvedOptimal);
        Assert.Empty(placement.Violations(problem.Model, problem.Cluster));
        var best = Instances.LocalActivations(problem, placement);
        Assert.Empty(new LatencyPlacement().Place(problem).Violations(problem.Model, problem.Cluster));
        foreach (var algorithm in PlacementAlgorithms.All.Where(a => a is not OptimalPlacement and not LatencyPlacement))
        {
            var other = algorithm.Place(problem);
            Assert.Empty(other.Violations(problem.Model, problem.Cluster));
            Assert.True(Instances.LocalActivations(problem, other) <= best + 1e-9, algorithm.Name);
        }
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void With_unequal_sizes_every_algorithm_stays_within_the_byte_budgets(int seed)
    {
        var problem = Instances.Random(seed + 100, unequalSizes: true);
        if (problem.Slots().Sum() < problem.Model.ExpertCount)
        {
            return;
        }

        foreach (var algorithm in PlacementAlgorithms.All)
        {
            var placement = algorithm.Place(problem);
            Assert.True(placement.Violations(problem.Model, problem.Cluster).Count == 0, algorithm.Name);
        }
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void The_latency_planner_never_models_worse_than_the_optimum_it_starts_from_on_the_history(int seed)
    {
        var problem = Instances.Random(seed);
        var model = new LatencyModel(problem.Model, problem.Cluster, problem.Latency);
        var optimal = model.Evaluate(new OptimalPlacement().Place(problem), problem.History!);
        var latency = model.Evaluate(new LatencyPlacement().Place(problem), problem.History!);
        Assert.True(latency.LatencyMsMean <= optimal.LatencyMsMean * (1 + 1e-6), $"{latency.LatencyMsMean} > {optimal.LatencyMsMean}");
    }

    [Fact]
    public void Too_little_memory_for_one_copy_of_each_expert_is_reported_as_infeasible()
    {
        var problem = Instances.Tiny([[1, 1, 1], [1, 1, 1]], [1, 1]);
        foreach (var algorithm in PlacementAlgorithms.All)
        {
            Assert.Throws<InfeasiblePlacementException>(() => algorithm.Place(problem));
        }
    }
}
