namespace DanceMoE.Placement.Tests;

public class MigrationPlannerTests
{
    public static TheoryData<int> Seeds => [.. Enumerable.Range(1, 15)];

    [Theory]
    [MemberData(nameof(Seeds))]
    public void Every_step_keeps_budgets_and_a_live_copy_of_every_expert(int seed)
    {
        var problem = Instances.Random(seed);
        var algorithms = PlacementAlgorithms.All;
        var from = algorithms[seed % algorithms.Count].Place(problem);
        var to = algorithms[(seed + 3) % algorithms.Count].Place(problem);
        var plan = MigrationPlanner.Plan(from, to, problem.Model, problem.Cluster);
        var current = from.Clone();
        foreach (var step in plan.Steps)
        {
            if (step.Action == MigrationAction.Load)
            {
                Assert.True(current.Holds(step.Source, step.Layer, step.Expert), "loaded from a server without the expert");
                current.Add(step.Server, step.Layer, step.Expert);
            }
            else
            {
                current.Remove(step.Server, step.Layer, step.Expert);
            }

            Assert.Empty(current.Violations(problem.Model, problem.Cluster));
        }

        Assert.True(current.SameAs(to));
        Assert.Equal(plan.Steps.Count(s => s.Action == MigrationAction.Load), plan.Loads);
    }

    [Fact]
    public void A_placement_migrates_to_itself_with_no_moves()
    {
        var problem = Instances.Random(4);
        var placement = new DanceMoePlacement().Place(problem);
        var plan = MigrationPlanner.Plan(placement, placement, problem.Model, problem.Cluster);
        Assert.Empty(plan.Steps);
        Assert.Equal(0, plan.Churn);
    }

    [Fact]
    public void Full_servers_swapping_sole_copies_stage_through_free_memory()
    {
        var model = MoeModel.Uniform(1, 2, 1, 100, 10);
        var cluster = Cluster.FullMesh(
            [ServerSpec.Edge("a", 100), ServerSpec.Edge("b", 100), ServerSpec.Edge("c", 100)],
            new LinkSpec(100, 0.001));
        var from = new ExpertPlacement(3, 1, 2);
        from.Add(0, 0, 0);
        from.Add(1, 0, 1);
        var to = new ExpertPlacement(3, 1, 2);
        to.Add(0, 0, 1);
        to.Add(1, 0, 0);
        var plan = MigrationPlanner.Plan(from, to, model, cluster);
        Assert.Contains(plan.Steps, s => s.Server == 2 && s.Action == MigrationAction.Load);
        Assert.Equal(3, plan.Loads);
        Assert.Equal(3.0, plan.Seconds, 6);
    }

    [Fact]
    public void A_swap_with_no_free_memory_anywhere_is_refused()
    {
        var model = MoeModel.Uniform(1, 2, 1, 100, 10);
        var cluster = Cluster.FullMesh([ServerSpec.Edge("a", 100), ServerSpec.Edge("b", 100)], new LinkSpec(100, 0.001));
        var from = new ExpertPlacement(2, 1, 2);
        from.Add(0, 0, 0);
        from.Add(1, 0, 1);
        var to = new ExpertPlacement(2, 1, 2);
        to.Add(0, 0, 1);
        to.Add(1, 0, 0);
        Assert.Throws<InvalidOperationException>(() => MigrationPlanner.Plan(from, to, model, cluster));
    }

    [Fact]
    public void The_rule_migrates_only_when_the_gain_over_the_horizon_pays_for_the_move()
    {
        var plan = new MigrationPlan([], 10, 10, 1000, Seconds: 30, Churn: 0.1);
        Assert.True(MigrationPlanner.Decide(3.0, 2.9, requestsPerSecond: 0.4, horizonSeconds: 1000, plan).Migrate);
        Assert.False(MigrationPlanner.Decide(3.0, 2.9, requestsPerSecond: 0.4, horizonSeconds: 60, plan).Migrate);
        Assert.False(MigrationPlanner.Decide(3.0, 3.1, requestsPerSecond: 0.4, horizonSeconds: 3000, plan).Migrate);
    }
}
