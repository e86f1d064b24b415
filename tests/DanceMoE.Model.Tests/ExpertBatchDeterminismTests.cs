using DanceMoE.Inference;
using DanceMoE.Model.Onnx;

namespace DanceMoE.Model.Tests;

/// <summary>
/// The edge batches rows of many requests through one expert; each row's answer must be bit-identical
/// to running that row alone, or batched runs drift from the single-request oracle.
/// </summary>
public sealed class ExpertBatchDeterminismTests : IDisposable
{
    private static readonly int[] BatchSizes = [2, 3, 5, 8, 16, 17, 64, 384];
    private readonly TempDirectory _dir = new();
    private readonly ModelManifest _manifest;

    public ExpertBatchDeterminismTests()
    {
        // The default model's expert shape (hidden 128, ffn 256), with few experts to keep the export quick.
        TinyCheckpoint.Write(_dir.Sub("ckpt"), TinyModels.Small() with { Layers = 1, Experts = 2, Hidden = 128 });
        _manifest = OnnxExporter.Export(Checkpoint.Open(_dir.Sub("ckpt")), _dir.Sub("onnx"), TensorDtype.F32);
    }

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData(1, TensorDtype.F32)]
    [InlineData(2, TensorDtype.F32)]
    [InlineData(1, TensorDtype.F16)]
    public void A_row_gives_the_same_bits_alone_and_at_any_place_in_a_batch(int intraOpThreads, TensorDtype dtype)
    {
        var manifest = dtype == TensorDtype.F32 ? _manifest : OnnxExporter.Export(Checkpoint.Open(_dir.Sub("ckpt")), _dir.Sub("onnx-f16"), dtype);
        var options = new InferenceOptions { Provider = ExecutionProvider.Cpu, IntraOpThreads = intraOpThreads };
        using var pool = new ExpertSessionPool(manifest, new SessionFactory(options));
        var hidden = manifest.Architecture.HiddenSize;
        var random = new SplitMix64(11);
        foreach (var rows in BatchSizes)
        {
            var batch = RandomRows(random, rows * hidden);
            var batched = pool.Run(0, 1, batch, rows);
            for (var r = 0; r < rows; r++)
            {
                var alone = pool.Run(0, 1, batch[(r * hidden)..((r + 1) * hidden)], 1);
                var mismatch = FirstBitMismatch(alone, batched.AsSpan(r * hidden, hidden));
                Assert.True(mismatch < 0, $"row {r} of {rows}: value {mismatch} differs from the row run alone");
            }
        }
    }

    [Fact]
    public void Intra_op_threads_do_not_change_the_bits()
    {
        using var one = new ExpertSessionPool(_manifest, new SessionFactory(new InferenceOptions { Provider = ExecutionProvider.Cpu, IntraOpThreads = 1 }));
        using var four = new ExpertSessionPool(_manifest, new SessionFactory(new InferenceOptions { Provider = ExecutionProvider.Cpu, IntraOpThreads = 4 }));
        var random = new SplitMix64(14);
        foreach (var rows in BatchSizes)
        {
            var batch = RandomRows(random, rows * _manifest.Architecture.HiddenSize);
            Assert.Equal(-1, FirstBitMismatch(one.Run(0, 0, batch, rows), four.Run(0, 0, batch, rows)));
        }
    }

    [Fact]
    public void The_span_overload_writes_the_same_bits_as_the_array_one()
    {
        using var pool = new ExpertSessionPool(_manifest, new SessionFactory(new InferenceOptions { Provider = ExecutionProvider.Cpu, IntraOpThreads = 1 }));
        var hidden = _manifest.Architecture.HiddenSize;
        var random = new SplitMix64(12);
        foreach (var rows in new[] { 1, 7, 32 })
        {
            var input = RandomRows(random, rows * hidden);
            var output = new float[(rows + 2) * hidden];
            pool.Run(0, 0, input, rows, output.AsMemory(hidden, rows * hidden));
            Assert.Equal(-1, FirstBitMismatch(pool.Run(0, 0, input, rows), output.AsSpan(hidden, rows * hidden)));
            Assert.All(output[..hidden], v => Assert.Equal(0f, v));
            Assert.All(output[((rows + 1) * hidden)..], v => Assert.Equal(0f, v));
        }
    }

    [Fact]
    public void A_layer_session_gives_each_expert_the_bits_of_its_own_session_in_one_run()
    {
        var factory = new SessionFactory(new InferenceOptions { Provider = ExecutionProvider.Cpu, IntraOpThreads = 1 });
        using var pool = new ExpertSessionPool(_manifest, factory);
        using var layer = new ExpertLayerSession(_manifest, 0, [0, 1], factory);
        var hidden = _manifest.Architecture.HiddenSize;
        var random = new SplitMix64(13);
        foreach (var (rows0, rows1) in new[] { (3, 40), (1, 0), (0, 17) })
        {
            var x0 = RandomRows(random, rows0 * hidden);
            var x1 = RandomRows(random, rows1 * hidden);
            var y0 = new float[x0.Length];
            var y1 = new float[x1.Length];
            ExpertRows[] work = [.. new[] { new ExpertRows(0, x0, rows0, y0), new ExpertRows(1, x1, rows1, y1) }.Where(w => w.Rows > 0)];
            layer.Run(work);
            Assert.Equal(-1, FirstBitMismatch(pool.Run(0, 0, x0, rows0), y0));
            Assert.Equal(-1, FirstBitMismatch(pool.Run(0, 1, x1, rows1), y1));
        }

        Assert.Throws<ArgumentException>(() => layer.Run([new ExpertRows(2, new float[hidden], 1, new float[hidden])]));
    }

    private static float[] RandomRows(SplitMix64 random, int count) =>
        [.. Enumerable.Range(0, count).Select(_ => (float)(random.NextDouble() * 4 - 2))];

    private static int FirstBitMismatch(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var i = 0; i < expected.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
            {
                return i;
            }
        }

        return -1;
    }
}
