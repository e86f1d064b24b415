using DanceMoE.Inference;
using DanceMoE.Model.Onnx;
using DanceMoE.Model.Onnx.Proto;
using DanceMoE.Model.Reference;

namespace DanceMoE.Model.Tests;

public sealed class ExternalDataTests
{
    private static readonly InferenceOptions Cpu = new() { Provider = ExecutionProvider.Cpu, IntraOpThreads = 1 };

    /// <summary>Graphs with more weight bytes than this keep them in side files (the real threshold is 1.5 GiB).</summary>
    private const long ExternalDataAbove = 1024;

    [Fact]
    public void A_re_export_into_the_same_directory_leaves_nothing_of_the_previous_export_but_keeps_other_files()
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Sub("ckpt"), ModelFamilyTests.Small(MoeConfig.DeepseekV2));
        var checkpoint = Checkpoint.Open(dir.Sub("ckpt"));
        var onnx = dir.Sub("onnx");
        OnnxExporter.Export(checkpoint, onnx, TensorDtype.F32, null, ExternalDataAbove);
        Directory.CreateDirectory(System.IO.Path.Combine(onnx, "heldout"));
        File.WriteAllText(System.IO.Path.Combine(onnx, "heldout", "other-checkpoint.txt"), "samples of another model");
        File.WriteAllText(System.IO.Path.Combine(onnx, "notes.txt"), "an operator's file");
        File.WriteAllText(System.IO.Path.Combine(dir.Path, "outside.onnx"), "not the export's");
        var listing = File.ReadAllText(System.IO.Path.Combine(onnx, ModelManifest.FileName));
        File.WriteAllText(System.IO.Path.Combine(onnx, ModelManifest.FileName), listing.Replace("\"head.onnx\"", "\"../outside.onnx\"", StringComparison.Ordinal));
        Assert.NotEmpty(Directory.GetFiles(onnx, "*.data"));

        OnnxExporter.Export(checkpoint, onnx, TensorDtype.F32);

        var manifest = ModelManifest.Load(onnx);
        var listed = manifest.Files().Select(f => f.File).Append(ModelManifest.FileName).Append("notes.txt").Order(StringComparer.Ordinal);
        Assert.Equal(listed, Directory.GetFiles(onnx).Select(System.IO.Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Empty(Directory.GetFiles(System.IO.Path.Combine(onnx, "heldout")));
        Assert.True(File.Exists(System.IO.Path.Combine(dir.Path, "outside.onnx")), "a name in the old manifest outside the directory was deleted");
        Assert.Empty(manifest.FindCorruptFiles());
    }

    [Fact]
    public async Task Weights_over_the_threshold_go_to_side_files_and_the_export_still_matches_its_reference()
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Sub("ckpt"), ModelFamilyTests.Small(MoeConfig.DeepseekV2));
        var checkpoint = Checkpoint.Open(dir.Sub("ckpt"));

        OnnxExporter.Export(checkpoint, dir.Sub("onnx"), TensorDtype.F32, null, ExternalDataAbove);
        var manifest = ModelManifest.Load(dir.Sub("onnx"));

        ModelFile[] graphs = [manifest.Embedding, manifest.Head, .. manifest.Layers.Select(l => l.Dense)];
        var files = graphs.Select(f => (f.File, f.Bytes, f.WeightBytes, f.ExternalData))
            .Concat(manifest.Experts.Select(e => (e.File, e.Bytes, e.WeightBytes, e.ExternalData))).ToList();
        Assert.All(files, f =>
        {
            Assert.Equal(f.File + ".data", f.ExternalData?.File);
            Assert.True(new FileInfo(manifest.PathOf(f.ExternalData!.File)).Length >= f.WeightBytes, f.File);
            Assert.True(f.Bytes < f.WeightBytes / 2, $"{f.File}: {f.Bytes} bytes in the .onnx for {f.WeightBytes} bytes of weights");
        });
        var expert = ModelProto.Parser.ParseFrom(File.ReadAllBytes(manifest.PathOf(manifest.Expert(0, 0).File)));
        Assert.All(expert.Graph.Initializer.Where(t => t.DataType == (int)TensorProto.Types.DataType.Float && t.FloatData.Count == 0), t =>
        {
            Assert.True(t.RawData.IsEmpty, t.Name);
            Assert.Equal(TensorProto.Types.DataLocation.External, t.DataLocation);
        });
        Assert.Empty(manifest.FindCorruptFiles());

        var reference = new ReferenceModel(MoeWeights.Load(checkpoint));
        using var pool = new ExpertSessionPool(manifest, new SessionFactory(Cpu));
        using var forward = new MoeForward(manifest, new SessionFactory(Cpu), new LocalExpertDispatcher(pool));
        var result = await ModelVerifier.VerifyAsync(forward, reference, ByteTokenizer.Default.Encode("mixture of experts"), 3, CancellationToken.None);
        Assert.True(result.MaxAbsDiff <= 1e-4, $"max |logit diff| {result.MaxAbsDiff}");

        // A layer session builds its graph in memory, so it reads the side files itself.
        var hidden = manifest.Architecture.HiddenSize;
        var x = Enumerable.Range(0, 2 * hidden).Select(i => (float)Math.Sin(i)).ToArray();
        var y = new float[x.Length];
        using (var layer = new ExpertLayerSession(manifest, 0, [1], new SessionFactory(Cpu)))
        {
            layer.Run([new ExpertRows(1, x, 2, y)]);
        }

        Assert.Equal(pool.Run(0, 1, x, 2).ToArray(), y);
    }

    [Fact]
    public void A_truncated_side_file_fails_naming_it()
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Sub("ckpt"), ModelFamilyTests.Small(MoeConfig.Mixtral));
        var manifest = OnnxExporter.Export(Checkpoint.Open(dir.Sub("ckpt")), dir.Sub("onnx"), TensorDtype.F32, null, ExternalDataAbove);
        var side = manifest.PathOf(manifest.Expert(1, 2).ExternalData!.File);
        using (var stream = File.Open(side, FileMode.Open))
        {
            stream.SetLength(stream.Length - 100);
        }

        var loading = Assert.Throws<ModelFormatException>(() => ModelManifest.Load(dir.Sub("onnx")));
        Assert.Contains("expert.1.2.onnx.data: the external data of expert.1.2.onnx is truncated", loading.Message, StringComparison.Ordinal);
        Assert.Equal(["expert.1.2.onnx.data"], manifest.FindCorruptFiles());

        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(manifest.PathOf(manifest.Expert(1, 2).File)));
        var inlining = Assert.Throws<ModelFormatException>(() => ExternalData.Inline(model, manifest.Directory));
        Assert.Contains("expert.1.2.onnx.data: truncated: tensor 'w", inlining.Message, StringComparison.Ordinal);
    }
}
