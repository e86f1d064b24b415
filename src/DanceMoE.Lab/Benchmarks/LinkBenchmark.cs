using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using DanceMoE.Edge;
using DanceMoE.Operations;
using Microsoft.Extensions.Options;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>What <c>dancemoe bench link</c> measures.</summary>
public sealed record LinkBenchmarkSettings(double DelayMs, double Mbps, int Bytes, int Samples, bool Json);

/// <summary>
/// <c>dancemoe bench link</c>: how long the edges' link emulation holds a batch against what it asks for, next to
/// <c>Task.Delay</c> of the same cost in the same process, one transmission at a time.
/// </summary>
public static class LinkBenchmark
{
    /// <summary>The longest one transmission may take: each of the samples waits that long, twice.</summary>
    public const double MaxSecondsPerSample = 60;

    public static async Task RunAsync(LinkBenchmarkSettings settings, TextWriter output, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(output);
        if (settings.DelayMs <= 0 && settings.Mbps <= 0)
        {
            throw new InvalidSettingsException("--delay-ms or --mbps must be above 0: there is no link to emulate otherwise");
        }

        // Computed before the emulator makes it a TimeSpan, which a rate of 1e-300 Mbit/s overflows.
        var secondsPerSample = (settings.DelayMs / 1e3) + (settings.Mbps > 0 ? settings.Bytes * 8.0 / (settings.Mbps * 1e6) : 0);
        if (secondsPerSample > MaxSecondsPerSample)
        {
            throw new InvalidSettingsException(string.Create(CultureInfo.InvariantCulture,
                $"--bytes {settings.Bytes} at --mbps {settings.Mbps} and --delay-ms {settings.DelayMs} take {secondsPerSample:G3} s a sample; at most {MaxSecondsPerSample} s"));
        }

        using var link = new LinkEmulator(Options.Create(new LinkOptions { DelayMs = settings.DelayMs, Mbps = settings.Mbps }));
        var asked = link.CostOf(settings.Bytes).TotalMilliseconds;
        var emulated = await SampleAsync(settings.Samples, () => link.TransmitAsync(settings.Bytes, cancellationToken)).ConfigureAwait(false);
        var delayed = await SampleAsync(settings.Samples, () => Task.Delay(link.CostOf(settings.Bytes), cancellationToken)).ConfigureAwait(false);
        var rows = new[] { ("link emulation", emulated), ("Task.Delay", delayed) };
        if (settings.Json)
        {
            output.WriteLine(JsonSerializer.Serialize(new
            {
                asked_ms = asked,
                bytes = settings.Bytes,
                samples = settings.Samples,
                link_emulation = Summary(emulated, asked),
                task_delay = Summary(delayed, asked),
            }));
            return;
        }

        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"one transmission of {settings.Bytes} bytes at {settings.DelayMs} ms one way, {(settings.Mbps > 0 ? $"{settings.Mbps} Mbit/s" : "unlimited bandwidth")}: asked {asked:F3} ms; {settings.Samples} samples each"));
        output.WriteLine("what             p50 ms   p99 ms   p50 / asked   earliest ms");
        foreach (var (name, samples) in rows)
        {
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{name,-15} {Percentile(samples, 0.5),7:F3} {Percentile(samples, 0.99),8:F3} {Percentile(samples, 0.5) / asked,13:F2} {samples[0],13:F3}"));
        }
    }

    private static object Summary(double[] samples, double asked) => new
    {
        p50_ms = Percentile(samples, 0.5),
        p99_ms = Percentile(samples, 0.99),
        min_ms = samples[0],
        p50_over_asked = Percentile(samples, 0.5) / asked,
    };

    private static async Task<double[]> SampleAsync(int samples, Func<Task> wait)
    {
        var times = new double[samples];
        for (var i = 0; i < samples; i++)
        {
            var start = Stopwatch.GetTimestamp();
            await wait().ConfigureAwait(false);
            times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }

        Array.Sort(times);
        return times;
    }

    private static double Percentile(double[] sorted, double q) => sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(q * sorted.Length) - 1)];
}
