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
}
