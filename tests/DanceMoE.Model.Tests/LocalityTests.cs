using DanceMoE.Model.Locality;

namespace DanceMoE.Model.Tests;

public class LocalityTests
{
    [Fact]
    public void Domains_with_disjoint_experts_are_fully_local_with_aware_placement_and_tv_one()
    {
        // Four domains, one layer, 8 experts: domain d uses experts 2d and 2d+1 only.
        var counts = Enumerable.Range(0, 4).Select(d => Layers(Enumerable.Range(0, 8).Select(e => e / 2 == d ? 10L : 0L).ToArray())).ToList();

        var report = DomainLocality.Analyse(["a", "b", "c", "d"], counts, 0.25);

        Assert.Equal(2, report.Slots);
        Assert.True(report.Covered);
        Assert.Equal(1.0, report.TvMean, 9);
        Assert.Equal(1.0, report.LocalShareAware, 9);
        Assert.Equal(1.0, report.LocalShareUniform, 9);
    }

    [Fact]
    public void Identical_domains_have_no_distance_and_aware_placement_gains_nothing_over_popular()
    {
        long[] usage = [40, 30, 10, 5, 5, 4, 3, 3];
        var counts = Enumerable.Range(0, 4).Select(_ => Layers(usage)).ToList();

        var report = DomainLocality.Analyse(["a", "b", "c", "d"], counts, 0.5);

        Assert.Equal(0.0, report.TvMean, 9);
        Assert.Equal(report.LocalSharePopular, report.LocalShareAware, 9);
        Assert.Equal(report.LocalShareAware, report.LocalShareAgnostic, 9);
    }

    [Fact]
    public void Aware_placement_places_every_expert_somewhere_by_dropping_the_least_used_duplicate()
    {
        double[][] usage =
        [
            [9, 8, 1, 0, 0, 0],
            [9, 7, 0, 2, 0, 0],
            [9, 8, 0, 0, 3, 0],
        ];

        var held = DomainLocality.AwarePlacement(usage, 2);

        Assert.All(Enumerable.Range(0, 6), e => Assert.Contains(held, h => h[e]));
        Assert.All(held, h => Assert.Equal(2, h.Count(x => x)));
    }

    [Fact]
    public void Too_few_slots_to_hold_every_expert_is_reported_as_not_covered()
    {
        var counts = Enumerable.Range(0, 2).Select(_ => Layers([1, 1, 1, 1, 1, 1, 1, 1])).ToList();

        var report = DomainLocality.Analyse(["a", "b"], counts, 0.25);

        Assert.False(report.Covered);
        Assert.Equal(0.25, report.LocalShareUniform, 9);
    }

    [Fact]
    public void Slots_round_the_fraction_of_experts()
    {
        Assert.Equal(5, DomainLocality.SlotsFor(0.3, 16));
        Assert.Equal(8, DomainLocality.SlotsFor(0.5, 16));
        Assert.Equal(1, DomainLocality.SlotsFor(0.01, 16));
    }

    [Fact]
    public void Routed_forward_matches_the_reference_forward_and_records_top_k_experts_per_token()
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Path, TinyModels.Small());
        var weights = MoeWeights.Load(Checkpoint.Open(dir.Path));
        var reference = new Reference.ReferenceModel(weights);
        int[] tokens = [256, 101, 100, 103, 101, 32, 115, 101, 114, 118];

        var routed = new RoutedForward(weights).Run(tokens);

        var expected = reference.Forward(tokens, reference.NewCache());
        Assert.Equal(expected.Length, routed.Logits.Length);
        Assert.True(expected.Zip(routed.Logits).Max(p => Math.Abs(p.First - p.Second)) < 1e-4);
        Assert.Equal(weights.Config.NumLayers, routed.Experts.Count);
        Assert.All(routed.Experts, l => Assert.Equal(tokens.Length * weights.Config.TopK, l.Length));
    }

    private static List<long[]> Layers(params long[][] layers) => [.. layers];
}
