using System.Text.Json.Nodes;
using DanceMoE.Model.Locality;

namespace DanceMoE.Model.Tests;

public sealed class LocalityStudyTests
{
    [Fact]
    public async Task A_tiny_checkpoint_without_held_out_samples_fails_as_a_model_format_error()
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Path, TinyModels.Small());

        var error = await Assert.ThrowsAsync<ModelFormatException>(() => LocalityStudy.RunAsync(dir.Path, 0.3, 0, CancellationToken.None));

        Assert.Equal($"{dir.Path}: no heldout/ folder of held-out samples", error.Message);
    }

    [Fact]
    public async Task The_default_model_reports_its_domains_as_text_and_json()
    {
        var model = Path.Combine(FindRoot(), "onnx", "default");

        var study = await LocalityStudy.RunAsync(model, 0.3, 256, CancellationToken.None);

        var json = JsonNode.Parse(study.ToJson())!;
        Assert.Equal(model, (string?)json["model"]);
        Assert.Equal(study.Report.Domains.Count, json["domains"]!.AsArray().Count);
        Assert.Equal(study.Config.NumLayers, json["per_layer"]!.AsArray().Count);
        Assert.StartsWith($"{model}: {study.Config.NumLayers} layers x {study.Config.NumExperts} experts", study.ToText(), StringComparison.Ordinal);
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "DanceMoE.Bus.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException($"no repository root above {AppContext.BaseDirectory}");
    }
}
