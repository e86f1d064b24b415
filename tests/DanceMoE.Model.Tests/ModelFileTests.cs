using System.Diagnostics;
using System.Text.Json.Nodes;
using DanceMoE.Model.Onnx;

namespace DanceMoE.Model.Tests;

/// <summary>Model files that are hostile or broken fail at load with one <see cref="ModelFormatException"/> naming the file.</summary>
public sealed class ModelFileTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData(Checkpoint.ConfigFile)]
    [InlineData(ByteTokenizer.FileName)]
    [InlineData(Checkpoint.IndexFile)]
    public void A_checkpoint_json_file_larger_than_any_real_one_is_refused_at_the_size_cap(string file)
    {
        TinyCheckpoint.Write(_dir.Path, TinyModels.Small());
        var path = Path.Combine(_dir.Path, file);
        WriteSparseFile(path, ModelFiles.MaxJsonBytes + 1);

        var ex = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(_dir.Path));

        Assert.Equal($"{path}: larger than 64 MiB, too large for a model's JSON file", ex.Message);
    }

    [Theory]
    [InlineData(Checkpoint.ConfigFile)]
    [InlineData(ByteTokenizer.FileName)]
    public void A_checkpoint_json_file_that_is_not_utf8_is_refused_rather_than_read_with_replacement_characters(string file)
    {
        TinyCheckpoint.Write(_dir.Path, TinyModels.Small());
        var path = Path.Combine(_dir.Path, file);
        var original = File.ReadAllBytes(path);
        Assert.Equal((byte)'{', original[0]);
        File.WriteAllBytes(path, [.. "{\"note\":\"caf"u8, 0xE9, .. "\","u8, .. original.AsSpan(1)]);

        var ex = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(_dir.Path));

        Assert.Equal($"{path}: not UTF-8 text", ex.Message);
    }

    [Fact]
    public void A_manifest_larger_than_any_real_one_is_refused_at_the_size_cap()
    {
        var path = Path.Combine(_dir.Path, ModelManifest.FileName);
        WriteSparseFile(path, ModelFiles.MaxJsonBytes + 1);

        var ex = Assert.Throws<ModelFormatException>(() => ModelManifest.Load(_dir.Path));

        Assert.Equal($"{path}: larger than 64 MiB, too large for a model's JSON file", ex.Message);
    }

    [Theory]
    [InlineData(Checkpoint.ConfigFile)]
    [InlineData(ByteTokenizer.FileName)]
    [InlineData(Checkpoint.SingleFile)]
    public async Task A_checkpoint_file_that_is_a_fifo_is_refused_instead_of_waiting_for_a_writer(string file)
    {
        TinyCheckpoint.Write(_dir.Path, TinyModels.Small());
        var path = Path.Combine(_dir.Path, file);
        File.Delete(path);
        await MakeFifoAsync(path);

        var ex = await RefusedWithinAsync(() => Checkpoint.Open(_dir.Path));

        Assert.Equal($"{path} is not a regular file", ex.Message);
    }

    [Fact]
    public async Task A_manifest_that_is_a_fifo_is_refused_instead_of_waiting_for_a_writer()
    {
        var path = Path.Combine(_dir.Path, ModelManifest.FileName);
        await MakeFifoAsync(path);

        var ex = await RefusedWithinAsync(() => ModelManifest.Load(_dir.Path));

        Assert.Equal($"{path} is not a regular file", ex.Message);
    }

    [Theory]
    [InlineData(Checkpoint.ConfigFile)]
    [InlineData(Checkpoint.SingleFile)]
    public void A_checkpoint_file_that_links_to_a_device_is_refused(string file)
    {
        TinyCheckpoint.Write(_dir.Path, TinyModels.Small());
        var path = Path.Combine(_dir.Path, file);
        File.Delete(path);
        File.CreateSymbolicLink(path, "/dev/zero");

        var ex = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(_dir.Path));

        Assert.Equal($"{path} is not a regular file", ex.Message);
    }

    [Fact]
    public void A_manifest_that_links_to_a_device_is_refused()
    {
        var path = Path.Combine(_dir.Path, ModelManifest.FileName);
        File.CreateSymbolicLink(path, "/dev/zero");

        var ex = Assert.Throws<ModelFormatException>(() => ModelManifest.Load(_dir.Path));

        Assert.Equal($"{path} is not a regular file", ex.Message);
    }

    [Theory]
    [InlineData("nowhere", "is a link to a missing file")]
    [InlineData(ModelManifest.FileName, "is a link that loops back on itself")]
    public void A_manifest_that_is_a_dangling_or_looping_link_is_refused_naming_it(string target, string problem)
    {
        var path = Path.Combine(_dir.Path, ModelManifest.FileName);
        File.CreateSymbolicLink(path, target);

        var ex = Assert.Throws<ModelFormatException>(() => ModelManifest.Load(_dir.Path));

        Assert.Equal($"{path} {problem}", ex.Message);
    }

    [Theory]
    [InlineData(Checkpoint.ConfigFile)]
    [InlineData(ByteTokenizer.FileName)]
    [InlineData(Checkpoint.SingleFile)]
    [InlineData(Checkpoint.IndexFile)]
    public void A_checkpoint_file_that_is_a_directory_is_refused_as_one_not_reported_missing(string file)
    {
        TinyCheckpoint.Write(_dir.Path, TinyModels.Small());
        var path = Path.Combine(_dir.Path, file);
        File.Delete(path);
        Directory.CreateDirectory(path);

        var ex = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(_dir.Path));

        Assert.Equal($"{path} is a directory, not a file", ex.Message);
    }

    [Fact]
    public void A_manifest_or_listed_onnx_file_that_is_a_directory_is_refused_as_one_not_reported_missing()
    {
        var directory = ExportTinyModel();
        var manifest = ModelManifest.Load(directory);
        var head = manifest.PathOf(manifest.Head.File);
        File.Delete(head);
        Directory.CreateDirectory(head);
        Assert.Equal($"{head} is a directory, not a file", Assert.Throws<ModelFormatException>(() => ModelManifest.Load(directory)).Message);

        var listing = Path.Combine(directory, ModelManifest.FileName);
        File.Delete(listing);
        Directory.CreateDirectory(listing);
        Assert.Equal($"{listing} is a directory, not a file", Assert.Throws<ModelFormatException>(() => ModelManifest.Load(directory)).Message);
    }

    [Theory]
    [InlineData(Checkpoint.ConfigFile)]
    [InlineData(ByteTokenizer.FileName)]
    [InlineData(Checkpoint.SingleFile)]
    public void A_checkpoint_file_that_is_a_dangling_link_is_refused_naming_it(string file)
    {
        TinyCheckpoint.Write(_dir.Path, TinyModels.Small());
        var path = Path.Combine(_dir.Path, file);
        File.Delete(path);
        File.CreateSymbolicLink(path, "nowhere");

        var ex = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(_dir.Path));

        Assert.Equal($"{path} is a link to a missing file", ex.Message);
    }

    [Theory]
    [InlineData("layers.0.experts.1.expert", "99", "manifest.json: layers[0] (layer 0) lists expert 0.99 in place 1; layer 0 must list its experts 0.0 to 0.3 once each, in order")]
    [InlineData("layers.1.experts.2.expert", "1", "manifest.json: layers[1] (layer 1) lists expert 1.1 in place 2;")]
    [InlineData("layers.1.experts.2.layer", "0", "manifest.json: layers[1] (layer 1) lists expert 0.2 in place 2;")]
    [InlineData("layers.1.layer", "0", "manifest.json: layers[1] (layer 0) lists expert 1.0 in place 0;")]
    [InlineData("layers.1.experts.3", "null", "manifest.json: 'layers' holds a null layer or expert entry")]
    [InlineData("layers.0", "null", "manifest.json: 'layers' holds a null layer or expert entry")]
    [InlineData("embedding", "null", "manifest.json: invalid manifest (")]
    [InlineData("architecture.dense_layers", "null", "manifest.json: invalid manifest (")]
    public void A_manifest_with_broken_layer_or_expert_entries_is_refused_at_load(string key, string value, string message)
    {
        var directory = ExportWithManifestValue(key, value);

        var ex = Assert.Throws<ModelFormatException>(() => ModelManifest.Load(directory));

        Assert.Contains(message, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_manifest_that_gives_a_key_twice_is_refused_at_load_not_read_with_the_last_value()
    {
        var directory = ExportTinyModel();
        var path = Path.Combine(directory, ModelManifest.FileName);
        var text = File.ReadAllText(path);
        File.WriteAllText(path, text.Replace("\"expert_weights\":", "\"expert_weights\": \"int8\", \"expert_weights\":", StringComparison.Ordinal));

        var ex = Assert.Throws<ModelFormatException>(() => ModelManifest.Load(directory));

        Assert.StartsWith($"{path}: invalid manifest (Duplicate property 'expert_weights'", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("architecture.hidden_size", "2147483647", "manifest.json: 'hidden_size' must be 1 to 131,072 (got 2147483647)")]
    [InlineData("architecture.num_layers", "100000", "manifest.json: 'num_hidden_layers' must be 1 to 4,096 (got 100000)")]
    [InlineData("architecture.max_positions", "2147483647", "manifest.json: 'max_position_embeddings' must be 1 to 16,777,216 (got 2147483647)")]
    [InlineData("architecture.shared_intermediate_size", "-1", "manifest.json: 'shared_expert_intermediate_size' must be 0 to 131,072 (got -1)")]
    public void A_manifest_with_architecture_numbers_too_large_to_run_is_refused_at_load(string key, string value, string message)
    {
        var directory = ExportWithManifestValue(key, value);

        var ex = Assert.Throws<ModelFormatException>(() => ModelManifest.Load(directory));

        Assert.Contains(message, ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("head.file", "\"../../../etc/passwd\"", "manifest.json: listed file '../../../etc/passwd' is not a file name inside the model directory")]
    [InlineData("layers.1.experts.0.file", "\"/etc/passwd\"", "manifest.json: listed file '/etc/passwd' is not a file name inside the model directory")]
    [InlineData("layers.0.dense.file", "\"\"", "manifest.json: listed file '' is not a file name inside the model directory")]
    [InlineData("embedding.file", "\"..\"", "manifest.json: listed file '..' is not a file name inside the model directory")]
    [InlineData("layers.0.dense_steps.attention.file", "\"../onnx/head.onnx\"", "manifest.json: listed file '../onnx/head.onnx' is not a file name inside the model directory")]
    [InlineData("embedding.file", "null", "manifest.json: invalid manifest (")]
    public void A_manifest_naming_a_file_outside_the_model_directory_or_none_is_refused_at_load(string key, string value, string message)
    {
        var directory = ExportWithManifestValue(key, value);

        var ex = Assert.Throws<ModelFormatException>(() => ModelManifest.Load(directory));

        Assert.Contains(message, ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("nowhere", "is a link to a missing file")]
    [InlineData("/dev/zero", "is not a regular file")]
    public void A_listed_onnx_file_that_is_a_dangling_link_or_a_device_is_refused_at_load(string target, string problem)
    {
        var directory = ExportTinyModel();
        var manifest = ModelManifest.Load(directory);
        var head = manifest.PathOf(manifest.Head.File);
        File.Delete(head);
        File.CreateSymbolicLink(head, target);

        var ex = Assert.Throws<ModelFormatException>(() => ModelManifest.Load(directory));

        Assert.Equal($"{head} {problem}", ex.Message);
    }

    [Fact]
    public async Task A_listed_onnx_file_that_is_a_fifo_is_refused_at_load()
    {
        var directory = ExportTinyModel();
        var manifest = ModelManifest.Load(directory);
        var expert = manifest.PathOf(manifest.Expert(1, 2).File);
        File.Delete(expert);
        await MakeFifoAsync(expert);

        var ex = await RefusedWithinAsync(() => ModelManifest.Load(directory));

        Assert.Equal($"{expert} is not a regular file", ex.Message);
    }

    [Fact]
    public void External_data_that_is_a_dangling_link_is_refused_at_load()
    {
        TinyCheckpoint.Write(_dir.Sub("ckpt"), TinyModels.Small());
        var directory = OnnxExporter.Export(Checkpoint.Open(_dir.Sub("ckpt")), _dir.Sub("onnx"), TensorDtype.F32, null, externalDataAbove: 0).Directory;
        var manifest = ModelManifest.Load(directory);
        var data = manifest.PathOf(manifest.Head.ExternalData!.File);
        File.Delete(data);
        File.CreateSymbolicLink(data, "nowhere");

        var ex = Assert.Throws<ModelFormatException>(() => ModelManifest.Load(directory));

        Assert.Equal($"{data} is a link to a missing file", ex.Message);
    }

    [Fact]
    public void A_listed_onnx_file_that_is_missing_is_refused_at_load()
    {
        var directory = ExportTinyModel();
        var manifest = ModelManifest.Load(directory);
        File.Delete(manifest.PathOf(manifest.Layers[0].Dense.File));

        var ex = Assert.Throws<ModelFormatException>(() => ModelManifest.Load(directory));

        Assert.Equal($"{Path.Combine(directory, ModelManifest.FileName)}: listed file {manifest.Layers[0].Dense.File} is missing", ex.Message);
    }

    private static void WriteSparseFile(string path, long bytes)
    {
        using var file = new FileStream(path, FileMode.Create, FileAccess.Write);
        file.SetLength(bytes);
    }

    /// <summary>.NET has no mkfifo, so the tool makes it.</summary>
    private static async Task MakeFifoAsync(string path)
    {
        using var mkfifo = Process.Start("/usr/bin/mkfifo", [path]);
        await mkfifo.WaitForExitAsync();
        Assert.Equal(0, mkfifo.ExitCode);
    }

    /// <summary>The load's refusal; a load that blocks fails the test after a while instead of hanging the run.</summary>
    private static async Task<ModelFormatException> RefusedWithinAsync(Action load) =>
        await Assert.ThrowsAsync<ModelFormatException>(() => Task.Run(load).WaitAsync(TimeSpan.FromSeconds(20)));

    private string ExportTinyModel()
    {
        TinyCheckpoint.Write(_dir.Sub("ckpt"), TinyModels.Small());
        return OnnxExporter.Export(Checkpoint.Open(_dir.Sub("ckpt")), _dir.Sub("onnx"), TensorDtype.F32).Directory;
    }

    /// <summary>Exports a tiny model, then sets one value of its manifest.json (a dotted path; numbers index arrays).</summary>
    private string ExportWithManifestValue(string key, string value)
    {
        var directory = ExportTinyModel();
        var path = Path.Combine(directory, ModelManifest.FileName);
        var root = JsonNode.Parse(File.ReadAllText(path))!;
        var parts = key.Split('.');
        var parent = parts[..^1].Aggregate(root, (node, part) => int.TryParse(part, out var i) ? node[i]! : node[part]!);
        var last = parts[^1];
        if (int.TryParse(last, out var index))
        {
            parent[index] = JsonNode.Parse(value);
        }
        else
        {
            parent[last] = JsonNode.Parse(value);
        }

        File.WriteAllText(path, root.ToJsonString());
        return directory;
    }
}
