namespace DanceMoE.Placement.Tests;

/// <summary>Small seeded problems for property tests.</summary>
internal static class Instances
{
    public static PlacementProblem Random(int seed, bool unequalSizes = false)
    {
        var random = new Random(seed);
        var servers = random.Next(2, 5);
        var layers = random.Next(2, 5);
        var experts = random.Next(4, 9);
        var topK = random.Next(1, 3);
        var sizes = Enumerable.Range(0, layers * experts).Select(_ => unequalSizes ? random.Next(1, 4) * 1_000_000L : 1_000_000L).ToArray();
        var model = new MoeModel(layers, experts, topK, sizes, 4096);
        var total = sizes.Sum();
        var share = (1.0 / servers) + (random.NextDouble() * 0.5);
        var budgets = Enumerable.Range(0, servers).Select(_ => (long)(total * share * (0.8 + (0.4 * random.NextDouble())))).ToArray();
        var fix = total - budgets.Sum() + (3 * sizes.Max());
        if (fix > 0)
        {
            budgets[0] += fix;
        }

        var cluster = Cluster.FullMesh(
            budgets.Select((b, i) => ServerSpec.Edge($"s{i}", b)).ToList(),
            LinkSpec.FromMbps(500, 2));
        var workload = SyntheticWorkload.Generate(seed, servers, model, 3, 20);
        return new PlacementProblem(model, cluster, ActivationCounts.FromWorkload(servers, model, workload))
        {
            History = workload,
            Latency = new LatencyOptions { DecodeTokens = 8 },
        };
    }

    /// <summary>The paper's objective as a utility: activations served on their own server.</summary>
    public static double LocalActivations(PlacementProblem problem, ExpertPlacement placement)
    {
        var sum = 0.0;
        for (var n = 0; n < placement.Servers; n++)
        {
            for (var l = 0; l < placement.Layers; l++)
            {
                for (var e = 0; e < placement.Experts; e++)
                {
                    if (placement.Holds(n, l, e))
                    {
                        sum += problem.Activations[n, l, e];
                    }
                }
            }
        }

        return sum;
    }

    public static PlacementProblem Tiny(double[][] counts, long[] slots, long[]? sizes = null)
    {
        var servers = counts.Length;
        var experts = counts[0].Length;
        var model = new MoeModel(1, experts, 1, sizes ?? Enumerable.Repeat(1L, experts).ToArray(), 4096);
        var cluster = Cluster.FullMesh(slots.Select((s, i) => ServerSpec.Edge($"s{i}", s)).ToList(), LinkSpec.FromMbps(500, 2));
        var activations = new ActivationCounts(servers, 1, experts);
        for (var n = 0; n < servers; n++)
        {
            for (var e = 0; e < experts; e++)
            {
                activations[n, 0, e] = counts[n][e];
            }
        }

        return new PlacementProblem(model, cluster, activations);
    }
}
