using System.Diagnostics;
using System.Text.Json;
using DanceMoE.Edge;
using Microsoft.Extensions.Options;

namespace DanceMoE.EndToEndTests;

public sealed class LinkEmulatorTests
{
    [Fact]
    public async Task A_transmission_never_leaves_before_its_delay_and_bytes_have_passed()
    {
        using var link = Link(delayMs: 1, mbps: 100);
        for (var i = 0; i < 50; i++)
        {
            var bytes = 1000 * (i % 5);
            var start = Stopwatch.GetTimestamp();
            await link.TransmitAsync(bytes, CancellationToken.None);
            Assert.True(Stopwatch.GetElapsedTime(start) >= link.CostOf(bytes), $"transmission {i} of {bytes} bytes left early");
        }
    }

    [Fact]
    public async Task Transmissions_sent_together_each_wait_their_own_cost_only()
    {
        using var link = Link(delayMs: 1, mbps: 8);
        var sizes = new[] { 9000, 1000, 5000, 0, 7000, 3000, 11000, 2000 };
        var start = Stopwatch.GetTimestamp();
        var results = await Task.WhenAll(sizes.Select(async bytes =>
        {
            await link.TransmitAsync(bytes, CancellationToken.None);
            return (bytes, elapsed: Stopwatch.GetElapsedTime(start));
        }));

        Assert.All(results, r => Assert.True(r.elapsed >= link.CostOf(r.bytes), $"{r.bytes} bytes left after {r.elapsed.TotalMilliseconds} ms"));
    }

    [Fact]
    public async Task A_short_transmission_does_not_wait_behind_a_long_one()
    {
        using var link = Link(delayMs: 1, mbps: 0.001);
        var slow = link.TransmitAsync(10_000_000, CancellationToken.None);
        await link.TransmitAsync(0, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.False(slow.IsCompleted);
    }

    [Fact]
    public async Task A_cancelled_transmission_ends_at_once_and_the_link_goes_on()
    {
        using var link = Link(delayMs: 60_000, mbps: 0);
        using var cancel = new CancellationTokenSource();
        var waiting = link.TransmitAsync(100, cancel.Token);
        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting.WaitAsync(TimeSpan.FromSeconds(10)));
        using var fast = Link(delayMs: 1, mbps: 0);
        await fast.TransmitAsync(100, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task Stopping_the_link_fails_what_waits_on_it_and_refuses_more()
    {
        var link = Link(delayMs: 60_000, mbps: 0);
        var waiting = link.TransmitAsync(100, CancellationToken.None);
        link.Dispose();

        await Assert.ThrowsAsync<ObjectDisposedException>(() => waiting.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Throws<ObjectDisposedException>(() => { _ = link.TransmitAsync(100, CancellationToken.None); });
    }

    [Fact]
    public void Without_a_link_a_transmission_is_already_done()
    {
        using var link = Link(delayMs: 0, mbps: 0);
        Assert.True(link.TransmitAsync(1 << 20, CancellationToken.None).IsCompletedSuccessfully);
    }

    [Fact]
    public async Task Bench_link_reports_the_emulation_never_releasing_a_batch_before_its_cost()
    {
        var (exitCode, output, errors) = await CommandLineTests.RunAsync(["bench", "link", "--delay-ms", "0.5", "--mbps", "100", "--bytes", "4096", "--samples", "20", "--json"]);

        Assert.True(exitCode == 0, $"exit {exitCode}: {errors}");
        using var report = JsonDocument.Parse(output);
        var asked = report.RootElement.GetProperty("asked_ms").GetDouble();
        Assert.Equal(0.5 + (4096 * 8 / 100_000.0), asked, 3);
        var emulation = report.RootElement.GetProperty("link_emulation");
        Assert.True(emulation.GetProperty("min_ms").GetDouble() >= asked, output);
        Assert.True(emulation.GetProperty("p99_ms").GetDouble() >= emulation.GetProperty("p50_ms").GetDouble(), output);
        Assert.True(report.RootElement.GetProperty("task_delay").TryGetProperty("p50_over_asked", out _), output);
    }

    [Fact]
    public async Task Bench_link_without_a_link_is_a_one_line_usage_error()
    {
        var (exitCode, _, errors) = await CommandLineTests.RunAsync(["bench", "link", "--delay-ms", "0", "--mbps", "0"]);

        Assert.Equal(2, exitCode);
        var line = Assert.Single(errors.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("--delay-ms or --mbps", line, StringComparison.Ordinal);
    }

    private static LinkEmulator Link(double delayMs, double mbps) =>
        new(Options.Create(new LinkOptions { DelayMs = delayMs, Mbps = mbps }));
}
