using DanceMoE.Inference;

namespace DanceMoE.Model.Tests;

public class SamplerTests
{
    private static readonly float[] Logits = [0.5f, 3f, 1f, 3f, -2f];

    [Fact]
    public void Greedy_picks_the_highest_logit_and_the_lowest_id_on_ties()
    {
        Assert.Equal(1, new Sampler(new SamplingOptions()).Next(Logits));
    }

    [Fact]
    public void Sampling_with_the_same_seed_draws_the_same_tokens()
    {
        var options = new SamplingOptions { Temperature = 1.5, TopP = 0.95, Seed = 42 };
        var a = new Sampler(options);
        var b = new Sampler(options);
        var drawsA = Enumerable.Range(0, 50).Select(_ => a.Next(Logits)).ToList();
        var drawsB = Enumerable.Range(0, 50).Select(_ => b.Next(Logits)).ToList();
        Assert.Equal(drawsA, drawsB);
        Assert.True(drawsA.Distinct().Count() > 1);
    }

    [Fact]
    public void A_small_top_p_keeps_only_the_most_likely_tokens()
    {
        var sampler = new Sampler(new SamplingOptions { Temperature = 1, TopP = 0.5, Seed = 1 });
        Assert.All(Enumerable.Range(0, 50), _ => Assert.True(sampler.Next(Logits) is 1 or 3));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void NaN_or_infinite_logits_are_refused_rather_than_read_as_token_0(double temperature)
    {
        var sampler = new Sampler(new SamplingOptions { Temperature = temperature });

        Assert.Throws<NonFiniteLogitsException>(() => sampler.Next([0.5f, float.NaN, 1f]));
        Assert.Throws<NonFiniteLogitsException>(() => sampler.Next([float.PositiveInfinity, float.PositiveInfinity, 1f]));
        Assert.Throws<NonFiniteLogitsException>(() => sampler.Next([float.NegativeInfinity, float.NegativeInfinity]));
        Assert.True(sampler.Next([0.5f, float.NegativeInfinity, 1f, float.NegativeInfinity]) is 0 or 2, "a logit of minus infinity only rules its token out");
    }
}
