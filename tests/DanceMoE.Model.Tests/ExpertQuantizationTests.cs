using DanceMoE.Inference;
using DanceMoE.Model.Onnx;
using DanceMoE.Model.Reference;

namespace DanceMoE.Model.Tests;

public sealed class ExpertQuantizationTests : IDisposable
{
    private static readonly InferenceOptions Cpu = new() { Provider = ExecutionProvider.Cpu, IntraOpThreads = 1 };
    private readonly TempDirectory _dir = new();

    public ExpertQuantizationTests()
    {
        TinyCheckpoint.Write(_dir.Sub("ckpt"), TinyModels.Small());
    }

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData(4, 3, 64)]
    [InlineData(8, 3, 64)]
    [InlineData(4, 5, 40)]
    [InlineData(8, 2, 17)]
    public void Every_weight_comes_back_within_half_a_step_of_its_block(int bits, int rows, int columns)
    {
        var w = RandomMatrix(rows * columns, seed: (ulong)(bits * columns));
        var q = ExpertQuantization.Quantize(w, rows, columns, bits);
        var back = ExpertQuantization.Dequantize(q);

        Assert.Equal(rows * ((columns + 31) / 32) * (bits == 4 ? 16 : 32), q.Packed.Length);
        for (var r = 0; r < rows; r++)
        {
            for (var c = 0; c < columns; c++)
            {
                var scale = q.Scales[(r * q.BlocksPerRow) + (c / q.BlockSize)];
                Assert.InRange(Math.Abs(back[(r * columns) + c] - w[(r * columns) + c]), 0, (scale / 2) + 1e-6);
            }
        }
    }

    [Theory]
    [InlineData(4)]
    [InlineData(8)]
    public void Zeros_stay_exact_and_a_block_of_zeros_costs_no_error(int bits)
    {
        var w = RandomMatrix(2 * 64, seed: 3);
        w.AsSpan(0, 32).Clear();
        w[40] = 0;

        var back = ExpertQuantization.Dequantize(ExpertQuantization.Quantize(w, 2, 64, bits));

        Assert.All(back[..32], v => Assert.Equal(0f, v));
        Assert.Equal(0f, back[40]);
    }

    [Fact]
    public void Eight_bits_are_closer_than_four()
    {
        var w = RandomMatrix(8 * 128, seed: 5);
        double Error(int bits) => ExpertQuantization.Dequantize(ExpertQuantization.Quantize(w, 8, 128, bits)).Zip(w, (a, b) => Math.Abs(a - b)).Max();

        Assert.True(Error(8) * 8 < Error(4), $"int8 {Error(8)}, int4 {Error(4)}");
    }

    [Theory]
    [InlineData(ExpertWeightFormat.Int8)]
    [InlineData(ExpertWeightFormat.Int4)]
    public async Task Quantised_experts_match_the_reference_that_dequantises_the_same_way(ExpertWeightFormat format)
    {
        var manifest = Export(format);

        // The reference computes with the very weights the export stores, so only float summation order differs:
        // the f32 export's tolerance holds. The plain reference is further off than that, which this check could not see.
        var exact = await VerifyAsync(manifest, ReferenceModel.Streaming(Checkpoint.Open(_dir.Sub("ckpt")), expertWeights: format));
        var plain = await VerifyAsync(manifest, ReferenceModel.Streaming(Checkpoint.Open(_dir.Sub("ckpt"))));

        Assert.True(exact.MaxAbsDiff < 1e-4, $"max |logit diff| {exact.MaxAbsDiff}");
        Assert.True(plain.MaxAbsDiff > 1e-3, $"max |logit diff| against unquantised weights {plain.MaxAbsDiff}");
    }

    [Theory]
    [MemberData(nameof(ModelFamilyTests.Families), MemberType = typeof(ModelFamilyTests))]
    public async Task Every_familys_int4_export_matches_its_dequantising_reference(string family)
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Sub("ckpt"), ModelFamilyTests.Small(family));
        var manifest = OnnxExporter.Export(Checkpoint.Open(dir.Sub("ckpt")), dir.Sub("onnx"), TensorDtype.F32, expertWeights: ExpertWeightFormat.Int4);

        var result = await VerifyAsync(manifest, ReferenceModel.Streaming(Checkpoint.Open(dir.Sub("ckpt")), expertWeights: ExpertWeightFormat.Int4));

        Assert.True(result.MaxAbsDiff < 1e-4, $"{family}: max |logit diff| {result.MaxAbsDiff}");
    }

    [Fact]
    public async Task Float16_experts_in_an_f32_export_match_the_reference_at_the_f32_tolerance()
    {
        var manifest = Export(ExpertWeightFormat.Fp16);

        var result = await VerifyAsync(manifest, ReferenceModel.Streaming(Checkpoint.Open(_dir.Sub("ckpt")), expertWeights: ExpertWeightFormat.Fp16));

        Assert.Equal("f32", manifest.WeightDtype);
        Assert.True(result.MaxAbsDiff < 1e-4, $"max |logit diff| {result.MaxAbsDiff}");
    }

    [Theory]
    [InlineData(ExpertWeightFormat.Fp32)]
    [InlineData(ExpertWeightFormat.Fp16)]
    [InlineData(ExpertWeightFormat.Int8)]
    [InlineData(ExpertWeightFormat.Int4)]
    public void Manifest_records_the_format_and_each_experts_real_bytes(ExpertWeightFormat format)
    {
        var c = Export(format).Architecture;
        var manifest = ModelManifest.Load(_dir.Sub($"onnx-{format.Name()}"));

        var blocks = (c.HiddenSize + 31) / 32;
        long Int4(int rows, int blocksPerRow) => (rows * blocksPerRow * (16 + 4)) + (rows * ((blocksPerRow + 1) / 2));
        Assert.Equal((2 * Int4(c.IntermediateSize, blocks)) + Int4(c.HiddenSize, 2 * blocks), ExpertQuantization.ExpertBytes(c, ExpertWeightFormat.Int4));
        Assert.Equal(format, manifest.ExpertFormat);
        Assert.Equal(format.Bits() > 0 ? 32 : null, manifest.ExpertBlockSize);
        Assert.All(manifest.Experts, e => Assert.Equal(ExpertQuantization.ExpertBytes(c, format), e.WeightBytes));
        Assert.All(manifest.Experts, e => Assert.Equal(new FileInfo(manifest.PathOf(e.File)).Length, e.Bytes));
        Assert.Empty(manifest.FindCorruptFiles());
    }

    [Fact]
    public void At_the_default_models_width_int8_and_int4_experts_take_under_030_and_017_of_fp32()
    {
        TinyCheckpoint.Write(_dir.Sub("wide"), new TinyOptions { Layers = 1, Experts = 2, Hidden = 128, Heads = 4, KvHeads = 2, MaxPositions = 16 });
        double MeanBytes(ExpertWeightFormat format) =>
            OnnxExporter.Export(Checkpoint.Open(_dir.Sub("wide")), _dir.Sub($"wide-{format.Name()}"), TensorDtype.F32, expertWeights: format).Experts.Average(e => e.Bytes);

        var fp32 = MeanBytes(ExpertWeightFormat.Fp32);

        Assert.InRange(MeanBytes(ExpertWeightFormat.Int8) / fp32, 0.25, 0.30);
        Assert.InRange(MeanBytes(ExpertWeightFormat.Int4) / fp32, 0.125, 0.17);
    }

    [Fact]
    public void A_manifest_without_the_expert_format_reads_as_its_weight_dtype_and_an_unknown_one_is_rejected()
    {
        var manifest = Export(ExpertWeightFormat.Fp32);
        var path = Path.Combine(manifest.Directory, ModelManifest.FileName);
        var text = File.ReadAllText(path);

        File.WriteAllText(path, text.Replace("\"expert_weights\": \"fp32\",", "", StringComparison.Ordinal));
        Assert.Equal(ExpertWeightFormat.Fp32, ModelManifest.Load(manifest.Directory).ExpertFormat);

        File.WriteAllText(path, text.Replace("\"expert_weights\": \"fp32\"", "\"expert_weights\": \"int3\"", StringComparison.Ordinal));
        var ex = Assert.Throws<ModelFormatException>(() => ModelManifest.Load(manifest.Directory));
        Assert.Contains(ModelManifest.FileName, ex.Message, StringComparison.Ordinal);
        Assert.Contains("int3", ex.Message, StringComparison.Ordinal);
    }

    private static float[] RandomMatrix(int count, ulong seed)
    {
        var random = new SplitMix64(seed);
        return [.. Enumerable.Range(0, count).Select(_ => (float)((random.NextDouble() - 0.5) * 0.2))];
    }

    private ModelManifest Export(ExpertWeightFormat format) =>
        OnnxExporter.Export(Checkpoint.Open(_dir.Sub("ckpt")), _dir.Sub($"onnx-{format.Name()}"), TensorDtype.F32, expertWeights: format);

    private static async Task<VerifyResult> VerifyAsync(ModelManifest manifest, ReferenceModel reference)
    {
        using var pool = new ExpertSessionPool(manifest, new SessionFactory(Cpu));
        using var forward = new MoeForward(manifest, new SessionFactory(Cpu), new LocalExpertDispatcher(pool));
        return await ModelVerifier.VerifyAsync(forward, reference, ByteTokenizer.Default.Encode("mixture of experts"), 4, CancellationToken.None);
    }
}
