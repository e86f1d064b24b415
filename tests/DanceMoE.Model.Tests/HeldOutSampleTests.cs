using System.Diagnostics;
using DanceMoE.Model.Locality;

namespace DanceMoE.Model.Tests;

public sealed class HeldOutSampleTests
{
    [Fact]
    public void A_sample_is_read_only_as_far_as_asked_so_a_huge_file_is_no_harm()
    {
        using var model = new TempDirectory();
        Directory.CreateDirectory(model.Sub("heldout"));
        using (var huge = File.Create(model.Sub("heldout/en.txt")))
        {
            huge.SetLength(HeldOutTrace.MaxSampleBytes + 1);
        }

        Assert.Equal(new byte[100], HeldOutTrace.Sample(model.Path, "en", 100));
        var error = Assert.Throws<ModelFormatException>(() => HeldOutTrace.Sample(model.Path, "en", 0));
        Assert.Contains("heldout/en.txt: the held-out sample is larger than 64 MiB", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_empty_or_unreadable_sample_is_a_format_error_not_a_perfect_score()
    {
        using var model = new TempDirectory();
        Directory.CreateDirectory(model.Sub("heldout"));
        File.WriteAllBytes(model.Sub("heldout/en.txt"), []);
        File.CreateSymbolicLink(model.Sub("heldout/fr.txt"), model.Sub("nowhere"));

        Assert.Contains("heldout/en.txt: the held-out sample is empty", Assert.Throws<ModelFormatException>(() => HeldOutTrace.Sample(model.Path, "en", 0)).Message, StringComparison.Ordinal);
        Assert.Contains("heldout/fr.txt is a link to a missing file", Assert.Throws<ModelFormatException>(() => HeldOutTrace.Sample(model.Path, "fr", 10)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_sample_that_is_a_fifo_or_a_device_is_refused_instead_of_read()
    {
        using var model = new TempDirectory();
        Directory.CreateDirectory(model.Sub("heldout"));
        File.CreateSymbolicLink(model.Sub("heldout/en.txt"), "/dev/zero");
        using (var mkfifo = Process.Start("/usr/bin/mkfifo", [model.Sub("heldout/fr.txt")]))
        {
            await mkfifo.WaitForExitAsync();
            Assert.Equal(0, mkfifo.ExitCode);
        }

        foreach (var domain in new[] { "en", "fr" })
        {
            var error = await Assert.ThrowsAsync<ModelFormatException>(() => Task.Run(() => HeldOutTrace.Sample(model.Path, domain, 10)).WaitAsync(TimeSpan.FromSeconds(20)));
            Assert.Equal($"{model.Sub($"heldout/{domain}.txt")} is not a regular file", error.Message);
        }
    }
}
