namespace DanceMoE.Placement.Tests;

public class OptimalPlacementTests
{
    [Fact]
    public void Spare_slots_go_to_the_replica_worth_most()
    {
        // Server 0 uses experts 0 and 1, server 1 uses 2 and a little 1: both hold 1, the shared expert.
        var problem = Instances.Tiny([[5, 3, 0], [0, 1, 4]], [2, 2]);
        var placement = new OptimalPlacement().Place(problem);
        Assert.Equal(13, Instances.LocalActivations(problem, placement));
        Assert.True(placement.Holds(0, 0, 0) && placement.Holds(0, 0, 1) && placement.Holds(1, 0, 2) && placement.Holds(1, 0, 1));
    }

    [Fact]
    public void Coverage_can_force_a_server_to_give_up_its_favourite()
    {
        // Three slots for three experts: each expert exactly once; server 1 takes expert 0 (10) and server 0 the rest (4 + 3).
        var problem = Instances.Tiny([[5, 4, 3], [10, 0, 0]], [2, 1]);
        var placement = new OptimalPlacement().Place(problem);
        Assert.Equal(17, Instances.LocalActivations(problem, placement));
        Assert.True(placement.Holds(1, 0, 0));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public void The_flow_matches_brute_force_on_tiny_instances(int seed)
    {
        var random = new Random(seed);
        var counts = new[] { Enumerable.Range(0, 4).Select(_ => (double)random.Next(0, 10)).ToArray(), Enumerable.Range(0, 4).Select(_ => (double)random.Next(0, 10)).ToArray() };
        var slots = new long[] { random.Next(2, 4), random.Next(2, 4) };
        var problem = Instances.Tiny(counts, slots);
        Assert.Equal(BruteForce(problem, [1, 1, 1, 1]), Instances.LocalActivations(problem, new OptimalPlacement().Place(problem)));
    }

    [Theory]
    [InlineData(6)]
    [InlineData(7)]
    [InlineData(8)]
    public void The_ilp_matches_brute_force_with_unequal_sizes(int seed)
    {
        var random = new Random(seed);
        var counts = new[] { Enumerable.Range(0, 4).Select(_ => (double)random.Next(0, 10)).ToArray(), Enumerable.Range(0, 4).Select(_ => (double)random.Next(0, 10)).ToArray() };
        var sizes = Enumerable.Range(0, 4).Select(_ => (long)random.Next(1, 4)).ToArray();
        var slots = new long[] { sizes.Sum() - 1, sizes.Sum() - 2 };
        var problem = Instances.Tiny(counts, slots, sizes);
        Assert.False(problem.Model.EqualSizes && sizes.Distinct().Count() > 1);
        Assert.Equal(BruteForce(problem, sizes), Instances.LocalActivations(problem, new OptimalPlacement().Place(problem)));
    }

    private static double BruteForce(PlacementProblem problem, long[] sizes)
    {
        var experts = problem.Model.Experts;
        var best = double.MinValue;
        for (var a = 0; a < 1 << experts; a++)
        {
            for (var b = 0; b < 1 << experts; b++)
            {
                if ((a | b) != (1 << experts) - 1)
                {
                    continue;
                }

                long bytesA = 0;
                long bytesB = 0;
                var value = 0.0;
                for (var e = 0; e < experts; e++)
                {
                    if ((a & (1 << e)) != 0)
                    {
                        bytesA += sizes[e];
                        value += problem.Activations[0, 0, e];
                    }

                    if ((b & (1 << e)) != 0)
                    {
                        bytesB += sizes[e];
                        value += problem.Activations[1, 0, e];
                    }
                }

                if (bytesA <= problem.Cluster.Servers[0].MemoryBytes && bytesB <= problem.Cluster.Servers[1].MemoryBytes)
                {
                    best = Math.Max(best, value);
                }
            }
        }

        return best;
    }
}
