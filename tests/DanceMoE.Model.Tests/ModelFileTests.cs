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
    public void A_checkpoint_json_file_that_never_ends_is_refused_at_the_size_cap(string file)
    {
        TinyCheckpoint.Write(_dir.Path, TinyModels.Small());
        var path = Path.Combine(_dir.Path, file);
        File.Delete(path);
        File.CreateSymbolicLink(path, "/dev/zero");

        var ex = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(_dir.Path));

        Assert.Equal($"{path}: larger than 64 MiB, too large for a model's JSON file", ex.Message);
    }

    [Fact]
    public void A_manifest_that_never_ends_is_refused_at_the_size_cap()
    {
        var path = Path.Combine(_dir.Path, ModelManifest.FileName);
        File.CreateSymbolicLink(path, "/dev/zero");

        var ex = Assert.Throws<ModelFormatException>(() => ModelManifest.Load(_dir.Path));

        Assert.Equal($"{path}: larger than 64 MiB, too large for a model's JSON file", ex.Message);
    }

    [Theory]
    [InlineData("nowhere")]
    [InlineData(ModelManifest.FileName)]
    public void A_manifest_that_is_a_dangling_or_looping_link_is_refused_naming_it(string target)
    {
        var path = Path.Combine(_dir.Path, ModelManifest.FileName);
        File.CreateSymbolicLink(path, target);

        var ex = Assert.Throws<ModelFormatException>(() => ModelManifest.Load(_dir.Path));

        Assert.StartsWith($"{path}: cannot be opened (", ex.Message, StringComparison.Ordinal);
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

        Assert.StartsWith($"{path}: cannot be opened (", ex.Message, StringComparison.Ordinal);
    }
}
