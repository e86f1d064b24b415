using System.Diagnostics;
using DanceMoE.Edge;
using DanceMoE.Hosting.Metrics;
using Microsoft.Extensions.Options;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>
/// The metrics' cost per token below the noise of a shared machine: the recording calls the edges made per token (from
/// their own counters) times each call's time measured here, on an <see cref="EdgeMetrics"/> with per-expert counters and
/// a <see cref="MetricsRegistry"/> listening as an edge's does, plus the scrapes per token times one scrape's time.
/// Per-expert calls are bounded by the expert calls (a batch serves several rows); one thread, so no lock contention.
/// </summary>
internal static class MetricsRecordingCost
{
    private static readonly TimeSpan WarmUp = TimeSpan.FromMilliseconds(300);

    /// <summary>Microseconds per token; <paramref name="perToken"/> gives each kind of call's count per token.</summary>
    public static double MicrosecondsPerToken(RecordedPerToken perToken, int layers, int experts)
    {
        ArgumentNullException.ThrowIfNull(perToken);
        using var metrics = new EdgeMetrics(Options.Create(new EdgeOptions { ExpertMetrics = true }));
        using var registry = new MetricsRegistry([metrics.Meter]);
        var token = NanosecondsPerCall(i => metrics.TokenProduced(1, TimeSpan.FromMilliseconds(30)), 200_000);
        var activation = NanosecondsPerCall(i => metrics.ExpertActivated(i % layers, i / layers % experts, 3), 200_000);
        var roundTrip = NanosecondsPerCall(i => metrics.PeerRoundTrip(i % 2 == 0 ? "edge-2" : "edge-3", TimeSpan.FromMilliseconds(5)), 200_000);
        var request = NanosecondsPerCall(_ => metrics.RequestFinished("completed", 32, TimeSpan.FromSeconds(1), 40, 20), 50_000);
        var scrape = NanosecondsPerCall(_ => registry.Scrape(), 200);
        var nanoseconds = token + (perToken.ExpertCalls * activation) + (perToken.RoundTrips * roundTrip) + (perToken.Requests * request) + (perToken.Scrapes * scrape);
        return nanoseconds / 1000;
    }

    private static double NanosecondsPerCall(Action<int> call, int calls)
    {
        var warm = Stopwatch.StartNew();
        for (var i = 0; warm.Elapsed < WarmUp; i++)
        {
            call(i);
        }

        var clock = Stopwatch.StartNew();
        for (var i = 0; i < calls; i++)
        {
            call(i);
        }

        return clock.Elapsed.TotalNanoseconds / calls;
    }
}

/// <summary>Per generated token: requests finished, expert calls, peer round trips and scrapes of one edge.</summary>
internal sealed record RecordedPerToken(double Requests, double ExpertCalls, double RoundTrips, double Scrapes);
