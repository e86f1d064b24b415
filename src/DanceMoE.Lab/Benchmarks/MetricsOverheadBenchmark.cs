using System.Diagnostics;
using System.Globalization;
using DanceMoE.Edge;
using DanceMoE.Model;
using DanceMoE.Operations;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>
/// <c>bench load --metrics-overhead</c>: one cluster whose edges serve metrics (per-expert counters on), warmed up with
/// metrics on and off, then rounds of two equal levels, one with recording on and scraped every second and one with it
/// paused (SIGUSR1/SIGUSR2, <see cref="EdgeMetrics.Recording"/>) and not scraped, the order alternating (on-off, off-on)
/// so that a drift of the machine's load cancels. Same processes, same JIT state, same placement: only the metrics differ.
/// Each round gives tokens/s on / off and the edges' CPU time per token (from /proc) off / on; their medians are the result.
/// </summary>
internal static class MetricsOverheadBenchmark
{
    private static readonly TimeSpan SwitchTimeout = TimeSpan.FromSeconds(10);

    public static async Task<MetricsOverhead> RunAsync(
        string exported, LoadBenchmarkSettings settings, Dictionary<string, IReadOnlyList<int>> oracle, TextWriter log, CancellationToken cancellationToken)
    {
        var concurrency = settings.Concurrency.Max();
        var edges = await LocalCluster.UpAsync(
            new ClusterSpec
            {
                Edges = settings.Edges, Model = exported, Provider = settings.Provider, LinkDelayMs = settings.LinkDelayMs, LinkMbps = settings.LinkMbps,
                MetricsPortBase = settings.MetricsPortBase,
            },
            log.WriteLine, cancellationToken).ConfigureAwait(false);
        try
        {
            await using var client = await BusClient.StartAsync(LocalEnvironment.RabbitMqUri, cancellationToken).ConfigureAwait(false);
            using var scraper = new MetricsScraper(settings.Edges, settings.MetricsPortBase);
            var cluster = new MeasuredCluster(edges, scraper);
            var target = new LoadBenchmark.LoadTarget(client.Requests, settings, oracle, log);
            foreach (var metrics in new[] { true, false })
            {
                var warmUp = await cluster.LevelAsync(target, concurrency, settings, metrics, cancellationToken).ConfigureAwait(false);
                log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"bench: metrics overhead, warm-up with metrics {(metrics ? "on" : "off")}: {warmUp.TokensPerS:F1} tokens/s, {warmUp.CpuMsPerToken:F2} CPU ms per token"));
            }

            var on = new List<RoundResult>();
            var off = new List<RoundResult>();
            for (var round = 0; round < settings.OverheadRounds; round++)
            {
                foreach (var metrics in round % 2 == 0 ? new[] { true, false } : [false, true])
                {
                    var result = await cluster.LevelAsync(target, concurrency, settings, metrics, cancellationToken).ConfigureAwait(false);
                    log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"bench: metrics overhead, round {round + 1} of {settings.OverheadRounds}, metrics {(metrics ? "on" : "off")}: {result.TokensPerS:F1} tokens/s, {result.CpuMsPerToken:F2} CPU ms per token"));
                    (metrics ? on : off).Add(result);
                }
            }

            var perToken = await cluster.RecordedPerTokenAsync(Stats.Median([.. on.Select(r => r.TokensPerS)]), cancellationToken).ConfigureAwait(false);
            var architecture = ModelManifest.Load(exported).Architecture;
            var recordingUs = MetricsRecordingCost.MicrosecondsPerToken(perToken, architecture.RoutedLayers, architecture.NumExperts);
            return MetricsOverhead.From(concurrency, settings.RequestsAt(concurrency), on, off, recordingUs);
        }
        finally
        {
            await LocalCluster.DownAsync(CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>The cluster's edges: their recording switch, their CPU time and their token counters.</summary>
    private sealed class MeasuredCluster(IReadOnlyList<StartedEdge> edges, MetricsScraper scraper)
    {
        /// <summary>
        /// One level with recording on (scraped every second) or off (not scraped); the edges' token counters must move by
        /// exactly the tokens answered, or not at all.
        /// </summary>
        public async Task<RoundResult> LevelAsync(
            LoadBenchmark.LoadTarget target, int concurrency, LoadBenchmarkSettings settings, bool metrics, CancellationToken cancellationToken)
        {
            await SwitchAsync(metrics, cancellationToken).ConfigureAwait(false);
            var countedBefore = await scraper.SumAsync("dancemoe_generated_tokens_total", cancellationToken).ConfigureAwait(false);
            var cpuBefore = LevelCpu.EdgesTime(edges);
            if (metrics)
            {
                scraper.Start();
            }

            var (samples, wall) = await LoadBenchmark.RunLevelAsync(target, concurrency, settings.RequestsAt(concurrency), settings, cancellationToken).ConfigureAwait(false);
            var cpu = LevelCpu.EdgesTime(edges) - cpuBefore;
            if (metrics)
            {
                await scraper.StopAsync().ConfigureAwait(false);
            }

            var counted = await scraper.SumAsync("dancemoe_generated_tokens_total", cancellationToken).ConfigureAwait(false) - countedBefore;
            var failed = samples.Count(s => s.Failed || !s.Matches);
            if (failed > 0)
            {
                throw new OperationException($"metrics overhead: {failed} of {samples.Count} requests failed or differ from the monolithic answer");
            }

            var tokens = samples.Sum(s => s.Tokens);
            if (counted != (metrics ? tokens : 0))
            {
                throw new OperationException(string.Create(CultureInfo.InvariantCulture,
                    $"metrics overhead: the edges counted {counted} tokens of a level of {tokens} with recording {(metrics ? "on" : "off")}"));
            }

            if (cpu <= TimeSpan.Zero)
            {
                throw new OperationException($"metrics overhead: a level of {tokens} tokens took no measurable CPU time; give it more requests (--requests-per-level)");
            }

            return new RoundResult(tokens / wall.TotalSeconds, cpu.TotalMilliseconds / tokens);
        }

        /// <summary>What the edges recorded per token (their counters count only while recording), and one scrape a second of each edge.</summary>
        public async Task<RecordedPerToken> RecordedPerTokenAsync(double tokensPerS, CancellationToken cancellationToken)
        {
            var tokens = await scraper.SumAsync("dancemoe_generated_tokens_total", cancellationToken).ConfigureAwait(false);
            return new RecordedPerToken(
                await scraper.SumAsync("dancemoe_requests_total", cancellationToken).ConfigureAwait(false) / tokens,
                await scraper.SumAsync("dancemoe_expert_calls_total", cancellationToken).ConfigureAwait(false) / tokens,
                await scraper.SumAsync("dancemoe_peer_round_trip_seconds_count", cancellationToken).ConfigureAwait(false) / tokens,
                edges.Count / tokensPerS);
        }

        private async Task SwitchAsync(bool on, CancellationToken cancellationToken)
        {
            foreach (var edge in edges)
            {
                LocalCluster.Signal(on ? "USR2" : "USR1", edge.Pid);
            }

            var clock = Stopwatch.StartNew();
            while (await scraper.SumAsync("dancemoe_metrics_recording", cancellationToken).ConfigureAwait(false) != (on ? edges.Count : 0))
            {
                if (clock.Elapsed > SwitchTimeout)
                {
                    throw new OperationException($"metrics overhead: the edges did not switch recording {(on ? "on" : "off")} within {SwitchTimeout.TotalSeconds} s");
                }

                await Task.Delay(50, cancellationToken).ConfigureAwait(false);
            }
        }
    }
}

/// <summary>One level of the overhead comparison.</summary>
internal sealed record RoundResult(double TokensPerS, double CpuMsPerToken);

/// <summary>
/// The metrics' cost at one concurrency: per round, tokens/s with metrics on / off (<see cref="RoundRatios"/>) and the
/// edges' CPU time per token off / on (<see cref="CpuRoundRatios"/>); below 1 is a cost, at least 0.97 is the target.
/// Medians, with the quartiles as the spread. <see cref="RecordingUsPerToken"/>: the recording and scraping the edges did
/// per token, timed call by call in this process (<see cref="MetricsRecordingCost"/>), and its share of the CPU per token on.
/// </summary>
public sealed record MetricsOverhead(
    int Concurrency, int Rounds, int RequestsPerLevel,
    IReadOnlyList<double> TokensPerSOn, IReadOnlyList<double> TokensPerSOff, IReadOnlyList<double> RoundRatios, double Ratio, double RatioP25, double RatioP75,
    IReadOnlyList<double> CpuMsPerTokenOn, IReadOnlyList<double> CpuMsPerTokenOff, IReadOnlyList<double> CpuRoundRatios, double CpuRatio, double CpuRatioP25, double CpuRatioP75,
    double RecordingUsPerToken, double RecordingShareOfCpu)
{
    internal static MetricsOverhead From(int concurrency, int requestsPerLevel, IReadOnlyList<RoundResult> on, IReadOnlyList<RoundResult> off, double recordingUs)
    {
        var cpuOnUs = Stats.Median([.. on.Select(r => r.CpuMsPerToken)]) * 1000;
        var ratios = on.Zip(off, (a, b) => Math.Round(a.TokensPerS / b.TokensPerS, 3)).ToList();
        var cpuRatios = on.Zip(off, (a, b) => Math.Round(b.CpuMsPerToken / a.CpuMsPerToken, 3)).ToList();
        return new MetricsOverhead(
            concurrency, on.Count, requestsPerLevel,
            [.. on.Select(r => Math.Round(r.TokensPerS, 1))], [.. off.Select(r => Math.Round(r.TokensPerS, 1))], ratios,
            Rounded(ratios, 50), Rounded(ratios, 25), Rounded(ratios, 75),
            [.. on.Select(r => Math.Round(r.CpuMsPerToken, 3))], [.. off.Select(r => Math.Round(r.CpuMsPerToken, 3))], cpuRatios,
            Rounded(cpuRatios, 50), Rounded(cpuRatios, 25), Rounded(cpuRatios, 75),
            Math.Round(recordingUs, 3), Math.Round(recordingUs / cpuOnUs, 6));
    }

    private static double Rounded(List<double> samples, double percentile) => Math.Round(Stats.Percentile(samples, percentile), 3);
}
