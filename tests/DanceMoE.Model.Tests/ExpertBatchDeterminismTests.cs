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
    [InlineData(1)]
    [InlineData(2)]
    public void A_row_gives_the_same_bits_alone_and_at_any_place_in_a_batch(int intraOpThreads)
    {
        var options = new InferenceOptions { Provider = ExecutionProvider.Cpu, IntraOpThreads = intraOpThreads };
        using var pool = new ExpertSessionPool(_manifest, new SessionFactory(options));
        var hidden = _manifest.Architecture.HiddenSize;
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
