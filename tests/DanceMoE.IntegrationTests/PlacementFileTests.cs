using DanceMoE.Edge;

namespace DanceMoE.IntegrationTests;

public sealed class PlacementFileTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("dancemoe-placement-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void A_file_larger_than_any_placement_is_refused_after_reading_a_bounded_part_of_it()
    {
        // As a placement mistaken for a disk image: read whole, a few GiB ran the edge out of memory ("Out of memory.", SIGABRT).
        var path = Path.Combine(_directory, "placement.json");
        using (var file = new FileStream(path, FileMode.CreateNew, FileAccess.Write))
        {
            file.SetLength(PlacementFile.MaxBytes * 3L);
        }

        var error = Assert.Throws<PlacementException>(() => PlacementFile.Load(path));

        Assert.Equal($"{path}: larger than 64 MiB, too large for a placement file", error.Message);
    }

    [Fact]
    public void A_placement_the_model_cannot_serve_is_refused_naming_its_file()
    {
        var path = Path.Combine(_directory, "placement.json");
        File.WriteAllText(path, "{\"version\": 1, \"assignments\": [{\"layer\": 999, \"expert\": 0, \"servers\": [\"edge-1\"]}]}");

        var error = Assert.Throws<PlacementException>(() => PlacementFile.Load(path, layers: 4, experts: 16));

        Assert.Equal($"{path}: placement v1 names expert 999.0, outside the model's 4 layers x 16 experts", error.Message);
    }

    [Fact]
    public void A_placement_that_lists_an_expert_twice_is_refused_naming_its_file()
    {
        var path = Path.Combine(_directory, "placement.json");
        File.WriteAllText(path, "\uFEFF{\"version\": 2, \"assignments\": [{\"layer\": 0, \"expert\": 1, \"servers\": [\"edge-1\"]}, {\"layer\": 0, \"expert\": 1, \"servers\": [\"edge-2\"]}]}");

        var error = Assert.Throws<PlacementException>(() => PlacementFile.Load(path));

        Assert.Equal($"{path}: placement v2 lists expert 0.1 twice", error.Message);
    }
}
