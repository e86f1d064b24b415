namespace DanceMoE.Placement.Tests;

public class LayerStepsTests
{
    [Theory]
    [InlineData(2, false)]
    [InlineData(9, false)]
    [InlineData(17, false)]
    [InlineData(5, true)]
    [InlineData(11, true)]
    [InlineData(23, false)]
    public void Layer_steps_price_every_layer_as_the_latency_model_does(int seed, bool unequalSizes)
    {
        var problem = Instances.Random(seed, unequalSizes);
        var requests = problem.History!.Requests;
        var model = new LatencyModel(problem.Model, problem.Cluster, problem.Latency);
        foreach (var placement in new[] { new OptimalPlacement().Place(problem), new EplbPlacement().Place(problem), Replicated(problem, seed) })
        {
            Assert.True(LayerSteps.PriceAsTheModel([.. Enumerable.Range(0, problem.Model.Layers).Select(l => new LayerSteps(problem, l, requests))], problem, placement, problem.History));
            for (var l = 0; l < problem.Model.Layers; l++)
            {
                var steps = new LayerSteps(problem, l, requests);

                var priced = steps.Reset(Holds(placement, l));

                Assert.Equal(model.LayerSeconds(placement, requests, l), priced, 1e-9);
            }
        }
    }

    [Theory]
    [InlineData(3)]
    [InlineData(12)]
    public void Layer_steps_price_a_shared_hosts_bus_with_work_per_byte_as_the_latency_model_does(int seed)
    {
        var random = Instances.Random(seed);
        var problem = random with
        {
            Latency = random.Latency with { SharedHostBus = true, MessageByteSeconds = 2e-9, MessageByteSquaredSeconds = 1e-15, MessageLanes = 2 },
        };
        var requests = problem.History!.Requests;
        var model = new LatencyModel(problem.Model, problem.Cluster, problem.Latency);
        var placement = Replicated(problem, seed);
        Assert.True(LayerSteps.PriceAsTheModel([.. Enumerable.Range(0, problem.Model.Layers).Select(l => new LayerSteps(problem, l, requests))], problem, placement, problem.History));
        var shared = Enumerable.Range(0, problem.Model.Layers).Sum(l => new LayerSteps(problem, l, requests).Reset(Holds(placement, l)));
        var linear = Enumerable.Range(0, problem.Model.Layers).Sum(l => new LayerSteps(problem with { Latency = problem.Latency with { MessageByteSquaredSeconds = 0 } }, l, requests).Reset(Holds(placement, l)));
        Assert.True(shared > linear);
        Assert.Equal(model.LayerSeconds(placement, requests, 0), new LayerSteps(problem, 0, requests).Reset(Holds(placement, 0)), 1e-9);
    }

    [Theory]
    [InlineData(4)]
    [InlineData(9)]
    public void A_toggles_delta_is_the_change_in_the_layers_price_and_applying_it_moves_the_total(int seed)
    {
        var problem = Instances.Random(seed);
        var placement = Replicated(problem, seed);
        var steps = new LayerSteps(problem, 0, problem.History!.Requests);
        var holds = Holds(placement, 0);
        var before = steps.Reset(holds);
        var server = Enumerable.Range(0, placement.Servers).First(s => holds[s] != (1UL << problem.Model.Experts) - 1);
        var expert = Enumerable.Range(0, problem.Model.Experts).First(e => (holds[server] & (1UL << e)) == 0);
        holds[server] |= 1UL << expert;

        var delta = steps.Delta(expert, holds);
        steps.Apply(expert, holds);

        Assert.Equal(steps.Price(holds) - before, delta, 1e-12);
        Assert.Equal(before + delta, steps.Seconds, 1e-12);
    }

    [Theory]
    [InlineData(4)]
    [InlineData(13)]
    public void The_toggle_table_stays_each_toggles_change_in_the_layers_price_for_decoded_tokens_and_for_prompts_once_refreshed(int seed)
    {
        var problem = Instances.Random(seed);
        var placement = Replicated(problem, seed);
        var random = new Random(seed);
        for (var l = 0; l < problem.Model.Layers; l++)
        {
            var steps = new LayerSteps(problem, l, problem.History!.Requests);
            var holds = Holds(placement, l);
            steps.Track(holds);
            for (var move = 0; move < 12; move++)
            {
                var (server, expert) = (random.Next(placement.Servers), random.Next(problem.Model.Experts));
                holds[server] ^= 1UL << expert;
                if (Enumerable.Range(0, placement.Servers).All(s => (holds[s] & (1UL << expert)) == 0))
                {
                    holds[server] ^= 1UL << expert;
                    continue;
                }

                steps.Apply(expert, holds);
                if (steps.Stale && move % 3 != 0)
                {
                    continue;
                }

                steps.Refresh(holds);
                Assert.Equal(steps.Price(holds), steps.Seconds, 1e-9);
                for (var s = 0; s < placement.Servers; s++)
                {
                    for (var e = 0; e < problem.Model.Experts; e++)
                    {
                        var trial = (ulong[])holds.Clone();
                        trial[s] ^= 1UL << e;
                        var covered = Enumerable.Range(0, placement.Servers).Any(t => (trial[t] & (1UL << e)) != 0);
                        Assert.Equal(covered ? steps.Price(trial) - steps.Price(holds) : 0, steps.Toggle(s, e), 1e-9);
                    }
                }
            }
        }
    }

    [Fact]
    public void Tokens_naming_one_expert_twice_or_layers_of_more_than_64_experts_cannot_be_priced()
    {
        var small = MoeModel.Uniform(1, 8, 2, 1, 1);
        Assert.True(LayerSteps.CanPrice(small, [new TraceRequest(0, 2, [[0, 1, 1, 0]])]));
        Assert.False(LayerSteps.CanPrice(small, [new TraceRequest(0, 2, [[0, 1, 2, 2]])]));
        Assert.False(LayerSteps.CanPrice(MoeModel.Uniform(1, 65, 2, 1, 1), [new TraceRequest(0, 1, [[0, 64]])]));
    }

    /// <summary>The optimum plus random replicas, so that steps have replicas to choose from.</summary>
    private static ExpertPlacement Replicated(PlacementProblem problem, int seed)
    {
        var random = new Random(seed);
        var placement = new OptimalPlacement().Place(problem);
        for (var i = 0; i < problem.Model.ExpertCount; i++)
        {
            placement.Add(random.Next(placement.Servers), random.Next(placement.Layers), random.Next(placement.Experts));
        }

        return placement;
    }

    private static ulong[] Holds(ExpertPlacement placement, int layer) =>
        [.. Enumerable.Range(0, placement.Servers).Select(s => placement.LayerBits(s, layer)[0])];
}
