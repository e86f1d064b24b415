using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using DanceMoE.Inference;
using DanceMoE.Model.Onnx;

namespace DanceMoE.Model.Tests;

public sealed class KvCacheStorageTests : IDisposable
{
    private static readonly InferenceOptions Cpu = new() { Provider = ExecutionProvider.Cpu, IntraOpThreads = 1 };
    private readonly TempDirectory _dir = new();
    private readonly ModelManifest _manifest;

    public KvCacheStorageTests()
    {
        TinyCheckpoint.Write(_dir.Sub("ckpt"), TinyModels.Small() with { Hidden = 64 });
        _manifest = OnnxExporter.Export(Checkpoint.Open(_dir.Sub("ckpt")), _dir.Sub("onnx"), TensorDtype.F32);
    }

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task Native_buffers_give_the_bits_of_managed_arrays_through_chunked_prefill_and_batched_decode()
    {
        using var managedEngine = Start(KvCacheStorage.Managed);
        using var nativeEngine = Start(KvCacheStorage.Native);
        var (managed, native) = (managedEngine.Forward, nativeEngine.Forward);
        Assert.Equal(KvCacheStorage.Managed, managed.KvCache);
        Assert.Equal(KvCacheStorage.Native, native.KvCache);

        var expected = await ServeAsync(managed);
        var actual = await ServeAsync(native);

        Assert.Equal(expected.Tokens, actual.Tokens);
        Assert.Equal(Bits(expected.Logits), Bits(actual.Logits));
    }

    [Theory]
    [MemberData(nameof(ModelFamilyTests.Families), MemberType = typeof(ModelFamilyTests))]
    public async Task Every_family_gets_the_same_bits_from_native_buffers_as_from_managed_arrays(string family)
    {
        TinyCheckpoint.Write(_dir.Sub(family), ModelFamilyTests.Small(family));
        var manifest = OnnxExporter.Export(Checkpoint.Open(_dir.Sub(family)), _dir.Sub(family + "-onnx"), TensorDtype.F32);
        using var managed = Start(manifest, KvCacheStorage.Managed);
        using var native = Start(manifest, KvCacheStorage.Native);

        var expected = await ServeAsync(managed.Forward);
        var actual = await ServeAsync(native.Forward);

        Assert.Equal(expected.Tokens, actual.Tokens);
        Assert.Equal(Bits(expected.Logits), Bits(actual.Logits));
    }

    /// <summary>
    /// A step runs a routed layer's projections and output once for all its sequences and the attention per sequence; it
    /// must give the bits of the one dense graph run per sequence, on either cache, for every family (a layer that runs
    /// several decoder layers, DeepSeek-V2's first, has no dense steps and runs the one graph).
    /// </summary>
    [Theory]
    [MemberData(nameof(ModelFamilyTests.Families), MemberType = typeof(ModelFamilyTests))]
    public async Task Every_family_gets_the_bits_of_one_dense_graph_per_sequence_from_the_dense_steps(string family)
    {
        TinyCheckpoint.Write(_dir.Sub(family), ModelFamilyTests.Small(family));
        var manifest = OnnxExporter.Export(Checkpoint.Open(_dir.Sub(family)), _dir.Sub(family + "-onnx"), TensorDtype.F32);
        Assert.All(manifest.Layers, l => Assert.Equal(l.DecoderLayers!.Count == 1, l.DenseSteps is not null));
        Assert.Contains(manifest.Layers, l => l.DenseSteps is not null);
        var prompt = ByteTokenizer.Default.Encode("edge servers share experts");
        foreach (var storage in new[] { KvCacheStorage.Managed, KvCacheStorage.Native })
        {
            using var graph = Start(manifest, storage, DenseGraphs.OneGraph);
            var expected = await ServeAsync(graph.Forward);
            var alone = await GenerateAsync(graph.Forward, prompt);
            foreach (var dense in new[] { DenseGraphs.Steps, DenseGraphs.Both })
            {
                using var steps = Start(manifest, storage, dense);
                var actual = await ServeAsync(steps.Forward);
                Assert.Equal(expected.Tokens, actual.Tokens);
                Assert.Equal(Bits(expected.Logits), Bits(actual.Logits));

                // One sequence alone: the steps run it too where they are all that is loaded.
                var single = await GenerateAsync(steps.Forward, prompt);
                Assert.Equal(alone.Tokens, single.Tokens);
                Assert.Equal(Bits(alone.Logits), Bits(single.Logits));
            }
        }
    }

    /// <summary>
    /// Each graph set holds the layer's dense weights: a forward asked for one set loads that set only, and a layer with no
    /// dense steps (DeepSeek-V2's first, several decoder layers) its one graph whatever was asked.
    /// </summary>
    [Fact]
    public void A_forward_loads_the_dense_graphs_it_was_asked_for_and_no_other()
    {
        var family = MoeConfig.DeepseekV2;
        TinyCheckpoint.Write(_dir.Sub(family), ModelFamilyTests.Small(family));
        var manifest = OnnxExporter.Export(Checkpoint.Open(_dir.Sub(family)), _dir.Sub(family + "-onnx"), TensorDtype.F32);
        Assert.Contains(manifest.Layers, l => l.DenseSteps is null);
        Assert.Contains(manifest.Layers, l => l.DenseSteps is not null);
        static ModelFile[] StepFiles(LayerFiles l) => l.DenseSteps is { } s ? [s.Projections, s.Attention, s.Output] : [];

        using var oneGraph = Start(manifest, KvCacheStorage.Managed, DenseGraphs.OneGraph);
        using var steps = Start(manifest, KvCacheStorage.Managed, DenseGraphs.Steps);
        using var both = Start(manifest, KvCacheStorage.Managed, DenseGraphs.Both);

        Assert.Equal(manifest.Layers.Select(l => l.Dense.File).Order(), oneGraph.Forward.DenseFiles.Select(f => f.File).Order());
        Assert.Equal(
            manifest.Layers.SelectMany(l => l.DenseSteps is null ? [l.Dense] : StepFiles(l)).Select(f => f.File).Order(),
            steps.Forward.DenseFiles.Select(f => f.File).Order());
        Assert.Equal(
            manifest.Layers.SelectMany(l => StepFiles(l).Append(l.Dense)).Select(f => f.File).Order(),
            both.Forward.DenseFiles.Select(f => f.File).Order());
        Assert.True(steps.Forward.DenseFiles.Sum(f => f.WeightBytes) < both.Forward.DenseFiles.Sum(f => f.WeightBytes));
    }

    [Fact]
    public async Task Greedy_generation_gives_the_same_token_ids_on_native_buffers_and_managed_arrays()
    {
        var prompt = ByteTokenizer.Default.Encode("edge servers share experts");
        var answers = new List<IReadOnlyList<int>>();
        foreach (var storage in new[] { KvCacheStorage.Managed, KvCacheStorage.Native })
        {
            using var engine = Start(storage);
            var forward = engine.Forward;
            var result = await Generator.GenerateAsync(forward, ByteTokenizer.Default, prompt, 12, new SamplingOptions(), new ForwardContext(), CancellationToken.None);
            answers.Add(result.TokenIds);
            Assert.Equal(0, forward.KvBuffersInUse);
        }

        Assert.Equal(answers[0], answers[1]);
        Assert.NotEmpty(answers[0]);
    }

    [Fact]
    public async Task A_native_cache_is_allocated_once_per_sequence_and_freed_when_it_leaves()
    {
        using var engine = Start(KvCacheStorage.Native);
        var forward = engine.Forward;
        var perSequence = 2 * _manifest.Architecture.RoutedLayers;
        for (var round = 0; round < 50; round++)
        {
            using var first = forward.NewState(16);
            using var second = forward.NewState(16);
            Assert.Equal(2 * perSequence, forward.KvBuffersInUse);
            await forward.StepAsync([Chunk([256, 97, 98], first), Chunk([256, 99], second)], CancellationToken.None);
            for (var t = 0; t < 4; t++)
            {
                await forward.StepAsync([Chunk([100 + t], first), Chunk([110 + t], second)], CancellationToken.None);
                Assert.Equal(2 * perSequence, forward.KvBuffersInUse);
            }
        }

        Assert.Equal(0, forward.KvBuffersInUse);
    }

    [Fact]
    public void A_native_cache_nobody_disposed_is_freed_by_the_finalizer()
    {
        using var engine = Start(KvCacheStorage.Native);
        var forward = engine.Forward;
        Forget(forward, 20);
        Assert.True(forward.KvBuffersInUse > 0);

        GC.Collect();
        GC.WaitForPendingFinalizers();

        Assert.Equal(0, forward.KvBuffersInUse);
    }

    [Fact]
    public async Task A_disposed_cache_cannot_be_run()
    {
        using var engine = Start(KvCacheStorage.Native);
        var forward = engine.Forward;
        var state = forward.NewState(8);
        state.Dispose();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => forward.ForwardAsync([256], state, new ForwardContext(), CancellationToken.None));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Forget(MoeForward forward, int sequences)
    {
        for (var i = 0; i < sequences; i++)
        {
            forward.NewState();
        }
    }

    private static SequenceChunk Chunk(int[] tokens, KvState state) => new(tokens, state, new ForwardContext());

    /// <summary>
    /// Four sequences as the edge's scheduler serves them: prompts prefilled in chunks of at most three tokens alongside the
    /// others' decode steps, then greedy decoding together until each has eight new tokens.
    /// </summary>
    private static async Task<(List<float[]> Logits, List<int>[] Tokens)> ServeAsync(MoeForward forward)
    {
        int[][] prompts = [[256, 104, 105, 32, 116, 104, 101, 114, 101], [256, 32], [256, 97, 98, 99, 100], [256, 120, 121, 122, 33, 63, 46]];
        var vocab = forward.Manifest.Architecture.VocabSize;
        var states = prompts.Select(_ => forward.NewState(32)).ToList();
        var generated = prompts.Select(_ => new List<int>()).ToArray();
        var prefilled = new int[prompts.Length];
        var logits = new List<float[]>();
        try
        {
            while (generated.Any(g => g.Count < 8))
            {
                var chunks = new List<SequenceChunk>();
                var who = new List<int>();
                for (var i = 0; i < prompts.Length; i++)
                {
                    if (generated[i].Count >= 8)
                    {
                        continue;
                    }

                    var tokens = prefilled[i] < prompts[i].Length ? prompts[i][prefilled[i]..Math.Min(prompts[i].Length, prefilled[i] + 3)] : [generated[i][^1]];
                    prefilled[i] += prefilled[i] < prompts[i].Length ? tokens.Length : 0;
                    chunks.Add(Chunk(tokens, states[i]));
                    who.Add(i);
                }

                var results = await forward.StepAsync(chunks, CancellationToken.None);
                for (var k = 0; k < who.Count; k++)
                {
                    var rows = results[k].Logits!;
                    logits.Add(rows);
                    if (prefilled[who[k]] == prompts[who[k]].Length)
                    {
                        generated[who[k]].Add(ArgMax(rows.AsSpan(rows.Length - vocab, vocab)));
                    }
                }
            }
        }
        finally
        {
            states.ForEach(s => s.Dispose());
        }

        return (logits, generated);
    }

    private static List<int[]> Bits(List<float[]> logits) => [.. logits.Select(l => MemoryMarshal.Cast<float, int>(l).ToArray())];

    private static int ArgMax(ReadOnlySpan<float> values)
    {
        var best = 0;
        for (var i = 1; i < values.Length; i++)
        {
            best = values[i] > values[best] ? i : best;
        }

        return best;
    }

    private static async Task<(IReadOnlyList<int> Tokens, List<float[]> Logits)> GenerateAsync(MoeForward forward, int[] prompt)
    {
        var vocab = forward.Manifest.Architecture.VocabSize;
        using var state = forward.NewState();
        var logits = new List<float[]> { await forward.ForwardAsync(prompt, state, new ForwardContext(), CancellationToken.None) };
        var tokens = new List<int>();
        for (var t = 0; t < 8; t++)
        {
            tokens.Add(ArgMax(logits[^1].AsSpan(logits[^1].Length - vocab, vocab)));
            logits.Add(await forward.ForwardAsync([tokens[^1]], state, new ForwardContext(), CancellationToken.None));
        }

        return (tokens, logits);
    }

    private static Engine Start(ModelManifest manifest, KvCacheStorage storage, DenseGraphs dense = DenseGraphs.Both)
    {
        var options = Cpu with { KvCache = storage, DenseGraphs = dense };
        var pool = new ExpertSessionPool(manifest, new SessionFactory(options));
        return new Engine(pool, new MoeForward(manifest, new SessionFactory(options), new LocalExpertDispatcher(pool)));
    }

    private Engine Start(KvCacheStorage storage) => Start(_manifest, storage);

    private sealed record Engine(ExpertSessionPool Pool, MoeForward Forward) : IDisposable
    {
        public void Dispose()
        {
            Forward.Dispose();
            Pool.Dispose();
        }
    }
}
