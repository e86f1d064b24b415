using DanceMoE.Inference;
using DanceMoE.Model.Onnx;
using DanceMoE.Model.Reference;

namespace DanceMoE.Model.Tests;

public sealed class OnnxExportTests : IDisposable
{
    private static readonly InferenceOptions Cpu = new() { Provider = ExecutionProvider.Cpu, IntraOpThreads = 1 };
    private readonly TempDirectory _dir = new();

    public OnnxExportTests()
    {
        TinyCheckpoint.Write(_dir.Sub("ckpt"), TinyModels.Small());
    }

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData(KvCacheStorage.Managed)]
    [InlineData(KvCacheStorage.Native)]
    public async Task Exported_subgraphs_match_the_reference_through_prefill_and_decode(KvCacheStorage storage)
    {
        var manifest = Export(TensorDtype.F32);
        var result = await VerifyAsync(manifest, Cpu with { KvCache = storage });
        // Prefill and 4 decode steps, each alone and as two sequences sharing the step (the dense steps' graphs).
        Assert.Equal(["prefill", "prefill x2", .. Enumerable.Repeat<string[]>(["decode", "decode x2"], 4).SelectMany(p => p)], result.Steps.Select(s => s.Phase));
        Assert.True(result.MaxAbsDiff < 1e-4, $"max |logit diff| {result.MaxAbsDiff}");
    }

    [Fact]
    public async Task Float16_export_stays_close_to_the_reference()
    {
        var manifest = Export(TensorDtype.F16);
        Assert.Equal("f16", manifest.WeightDtype);
        var result = await VerifyAsync(manifest, Cpu);
        Assert.True(result.MaxAbsDiff < 5e-2, $"max |logit diff| {result.MaxAbsDiff}");
    }

    [Fact]
    public void Manifest_lists_one_expert_file_per_layer_and_expert_with_hashes_and_sizes()
    {
        Export(TensorDtype.F32);
        var manifest = ModelManifest.Load(_dir.Sub("onnx"));
        var c = manifest.Architecture;
        Assert.Equal(c.NumLayers * c.NumExperts, manifest.Experts.Count());
        Assert.Equal(c.NumLayers * c.NumExperts, Directory.GetFiles(_dir.Sub("onnx"), "expert.*.onnx").Length);
        Assert.All(manifest.Experts, e => Assert.Equal(3L * c.HiddenSize * c.IntermediateSize * 4, e.WeightBytes));
        Assert.Empty(manifest.FindCorruptFiles());
        Assert.Equal(GraphBuilder.OpsetVersion, manifest.Opset);
        Assert.NotNull(manifest.Tokenizer);

        File.AppendAllText(manifest.PathOf(manifest.Expert(1, 2).File), "x");
        Assert.Equal(["expert.1.2.onnx"], manifest.FindCorruptFiles());
    }

    [Fact]
    public async Task Onnx_decode_with_the_kv_cache_gives_the_logits_of_recomputing_the_whole_sequence()
    {
        var manifest = Export(TensorDtype.F32);
        using var pool = new ExpertSessionPool(manifest, new SessionFactory(Cpu));
        using var forward = new MoeForward(manifest, new SessionFactory(Cpu), new LocalExpertDispatcher(pool));
        int[] tokens = [256, 104, 105, 32, 116, 104, 101, 114];
        var vocab = manifest.Architecture.VocabSize;
        var full = await forward.ForwardAsync(tokens, forward.NewState(), new ForwardContext(), CancellationToken.None);
        var state = forward.NewState();
        var context = new ForwardContext();
        await forward.ForwardAsync(tokens[..4], state, context, CancellationToken.None);
        for (var t = 4; t < tokens.Length; t++)
        {
            var step = await forward.ForwardAsync([tokens[t]], state, context, CancellationToken.None);
            Assert.True(ModelVerifier.MaxAbsDiff(full.AsSpan(t * vocab, vocab), step) < 1e-4, $"position {t}");
        }
    }

    [Theory]
    [InlineData(KvCacheStorage.Managed)]
    [InlineData(KvCacheStorage.Native)]
    public async Task A_step_of_several_sequences_gives_each_the_same_bits_as_running_it_alone(KvCacheStorage storage)
    {
        TinyCheckpoint.Write(_dir.Sub("ckpt-128"), TinyModels.Small() with { Hidden = 128 });
        var manifest = OnnxExporter.Export(Checkpoint.Open(_dir.Sub("ckpt-128")), _dir.Sub("onnx-128"), TensorDtype.F32);
        var options = Cpu with { KvCache = storage };
        using var pool = new ExpertSessionPool(manifest, new SessionFactory(options));
        using var forward = new MoeForward(manifest, new SessionFactory(options), new LocalExpertDispatcher(pool));
        int[][] prompts = [[256, 104, 105], [256, 32], [256, 116, 104, 101, 114, 101], [256, 97]];
        var alone = new List<float[]>();
        foreach (var prompt in prompts)
        {
            var state = forward.NewState();
            await forward.ForwardAsync(prompt[..^1], state, new ForwardContext(), CancellationToken.None);
            alone.Add(await forward.ForwardAsync(prompt[^1..], state, new ForwardContext(), CancellationToken.None));
        }

        var states = prompts.Select(_ => forward.NewState()).ToList();
        await forward.StepAsync([.. prompts.Select((p, i) => new SequenceChunk(p[..^1], states[i], new ForwardContext()))], CancellationToken.None);
        var together = await forward.StepAsync([.. prompts.Select((p, i) => new SequenceChunk(p[^1..], states[i], new ForwardContext()))], CancellationToken.None);

        for (var i = 0; i < prompts.Length; i++)
        {
            Assert.Null(together[i].Error);
            Assert.Equal(alone[i], together[i].Logits);
        }
    }

    [Fact]
    public async Task Greedy_generation_twice_gives_identical_token_ids()
    {
        var manifest = Export(TensorDtype.F32);
        var tokenizer = ByteTokenizer.Default;
        var prompt = tokenizer.Encode("edge servers share experts");
        var runs = new List<IReadOnlyList<int>>();
        for (var i = 0; i < 2; i++)
        {
            using var pool = new ExpertSessionPool(manifest, new SessionFactory(Cpu));
            using var forward = new MoeForward(manifest, new SessionFactory(Cpu), new LocalExpertDispatcher(pool));
            var result = await Generator.GenerateAsync(forward, tokenizer, prompt, 10, new SamplingOptions(), new ForwardContext(), CancellationToken.None);
            runs.Add(result.TokenIds);
        }

        Assert.Equal(runs[0], runs[1]);
        Assert.True(runs[0].Count > 0);
    }

    [Fact]
    public void Expert_sessions_load_and_unload_one_by_one_with_memory_from_the_manifest()
    {
        var manifest = Export(TensorDtype.F32);
        using var pool = new ExpertSessionPool(manifest, new SessionFactory(Cpu));
        pool.Load(0, 1);
        pool.Load(1, 3);
        Assert.Equal(2, pool.LoadedCount);
        Assert.Equal(manifest.Expert(0, 1).WeightBytes + manifest.Expert(1, 3).WeightBytes, pool.LoadedBytes);
        Assert.True(pool.Unload(0, 1));
        Assert.False(pool.IsLoaded(0, 1));
        Assert.Equal(manifest.Expert(1, 3).WeightBytes, pool.LoadedBytes);
        Assert.False(pool.Unload(0, 1));
    }

    [Fact]
    public void Expert_subgraph_matches_the_reference_swiglu_at_several_batch_sizes()
    {
        var manifest = Export(TensorDtype.F32);
        var weights = MoeWeights.Load(Checkpoint.Open(_dir.Sub("ckpt")));
        var c = weights.Config;
        using var pool = new ExpertSessionPool(manifest, new SessionFactory(Cpu));
        var random = new SplitMix64(5);
        foreach (var rows in new[] { 1, 3, 8 })
        {
            var x = Enumerable.Range(0, rows * c.HiddenSize).Select(_ => (float)random.NextDouble() - 0.5f).ToArray();
            var expected = Kernels.SwiGlu(x, rows, weights.Layers[1].Experts[2], c.HiddenSize, c.IntermediateSize);
            Assert.True(ModelVerifier.MaxAbsDiff(expected, pool.Run(1, 2, x, rows)) < 1e-5);
        }
    }

    [Fact]
    public void Auto_provider_falls_back_to_cpu_with_one_log_line_when_cuda_is_absent()
    {
        var manifest = Export(TensorDtype.F32);
        var lines = new List<string>();
        var factory = new SessionFactory(new InferenceOptions { Provider = ExecutionProvider.Auto }, lines.Add);
        using var a = factory.Create(manifest.PathOf(manifest.Head.File));
        using var b = factory.Create(manifest.PathOf(manifest.Embedding.File));
        Assert.NotNull(factory.ProviderInUse);
        Assert.Equal(factory.ProviderInUse == "cpu" ? 1 : 0, lines.Count);
    }

    [Fact]
    public async Task Verify_against_another_checkpoint_reports_a_difference_far_above_tolerance()
    {
        var manifest = Export(TensorDtype.F32);
        TinyCheckpoint.Write(_dir.Sub("other"), TinyModels.Small(seed: 8));
        var reference = new ReferenceModel(MoeWeights.Load(Checkpoint.Open(_dir.Sub("other"))));
        using var pool = new ExpertSessionPool(manifest, new SessionFactory(Cpu));
        using var forward = new MoeForward(manifest, new SessionFactory(Cpu), new LocalExpertDispatcher(pool));
        var result = await ModelVerifier.VerifyAsync(forward, reference, [256, 97, 98], 1, CancellationToken.None);
        Assert.True(result.MaxAbsDiff > 1e-2);
    }

    [Fact]
    public async Task Routing_records_cover_every_token_and_layer_with_top_k_experts()
    {
        var manifest = Export(TensorDtype.F32);
        using var pool = new ExpertSessionPool(manifest, new SessionFactory(Cpu));
        using var forward = new MoeForward(manifest, new SessionFactory(Cpu), new LocalExpertDispatcher(pool));
        var context = new ForwardContext(recordRouting: true);
        await forward.ForwardAsync([256, 97, 98], forward.NewState(), context, CancellationToken.None);
        var records = context.Decisions;
        var c = manifest.Architecture;
        Assert.Equal(3 * c.NumLayers, records.Count);
        Assert.All(records, r => Assert.Equal(c.TopK, r.Choices.Count));
        Assert.All(records, r => Assert.Equal(1f, r.Choices.Sum(x => x.Weight), 5));
    }

    [Fact]
    public void Manifest_with_a_missing_file_is_rejected()
    {
        var manifest = Export(TensorDtype.F32);
        File.Delete(manifest.PathOf(manifest.Expert(0, 0).File));
        var ex = Assert.Throws<ModelFormatException>(() => ModelManifest.Load(_dir.Sub("onnx")));
        Assert.Contains("expert.0.0.onnx", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Manifest_whose_tokenizer_ids_fall_outside_the_vocabulary_is_rejected()
    {
        var manifest = Export(TensorDtype.F32);
        (manifest with { Tokenizer = manifest.Tokenizer! with { BosTokenId = 100_000 } }).Save(manifest.Directory);
        var ex = Assert.Throws<ModelFormatException>(() => ModelManifest.Load(_dir.Sub("onnx")));
        Assert.Contains("manifest.json: byte tokenizer's bos_token_id must be 256 to 257", ex.Message, StringComparison.Ordinal);
    }

    private ModelManifest Export(TensorDtype dtype) =>
        OnnxExporter.Export(Checkpoint.Open(_dir.Sub("ckpt")), _dir.Sub("onnx"), dtype);

    private async Task<VerifyResult> VerifyAsync(ModelManifest manifest, InferenceOptions options)
    {
        var reference = new ReferenceModel(MoeWeights.Load(Checkpoint.Open(_dir.Sub("ckpt"))));
        using var pool = new ExpertSessionPool(manifest, new SessionFactory(options));
        using var forward = new MoeForward(manifest, new SessionFactory(options), new LocalExpertDispatcher(pool));
        return await ModelVerifier.VerifyAsync(forward, reference, ByteTokenizer.Default.Encode("mixture of experts"), 4, CancellationToken.None);
    }
}
