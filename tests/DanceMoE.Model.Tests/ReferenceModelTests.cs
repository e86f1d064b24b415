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
    public void Streaming_reference_reading_experts_on_demand_gives_the_same_logits()
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Path, TinyModels.Small());
        var checkpoint = Checkpoint.Open(dir.Path);
        var inMemory = new ReferenceModel(MoeWeights.Load(checkpoint));
        var streaming = ReferenceModel.Streaming(checkpoint, cacheBytes: 1);
        int[] tokens = [256, 120, 121, 122];
        Assert.Equal(inMemory.Forward(tokens, inMemory.NewCache()), streaming.Forward(tokens, streaming.NewCache()));
    }

    [Fact]
    public void Parallel_and_sequential_matrix_products_agree_exactly()
    {
        var random = new SplitMix64(9);
        var x = Enumerable.Range(0, 3 * 512).Select(_ => (float)random.NextDouble() - 0.5f).ToArray();
        var w = Enumerable.Range(0, 4096 * 512).Select(_ => (float)random.NextDouble() - 0.5f).ToArray();
        Assert.Equal(Kernels.Linear(x.AsSpan(), 3, w.AsSpan(), 4096, 512), Kernels.Linear(x, 3, w, 4096, 512));
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
