using DanceMoE.Model.Reference;

namespace DanceMoE.Model.Tests;

public class ReferenceModelTests
{
    [Fact]
    public void Decode_with_the_kv_cache_gives_the_logits_of_recomputing_the_whole_sequence()
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Path, TinyModels.Small());
        var model = new ReferenceModel(MoeWeights.Load(Checkpoint.Open(dir.Path)));
        int[] tokens = [256, 101, 100, 103, 101, 32, 115, 101];
        var vocab = model.Config.VocabSize;

        var full = model.Forward(tokens, model.NewCache());
        var cache = model.NewCache();
        model.Forward(tokens.AsSpan(0, 5), cache);
        for (var t = 5; t < tokens.Length; t++)
        {
            var step = model.Forward(tokens.AsSpan(t, 1), cache);
            for (var v = 0; v < vocab; v++)
            {
                Assert.True(Math.Abs(full[(t * vocab) + v] - step[v]) < 1e-5, $"position {t}, token {v}");
            }
        }
    }

    [Fact]
    public void Router_renormalises_the_top_k_softmax_weights()
    {
        var choices = Routing.TopK([0.1f, 2f, -1f, 2f, 1f], 2);
        Assert.Equal([1, 3], choices.Select(c => c.Expert));
        Assert.Equal(0.5f, choices[0].Weight, 6);
        Assert.Equal(1f, choices.Sum(c => c.Weight), 6);
    }
}
