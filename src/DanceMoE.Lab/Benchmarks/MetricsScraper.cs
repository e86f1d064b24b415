using DanceMoE.Operations;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>Scrapes every edge's /metrics once a second while a level runs, as Prometheus would, and reads them on demand.</summary>
internal sealed class MetricsScraper(int edges, int portBase) : IDisposable
{
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(5) };
    private CancellationTokenSource? _stop;
    private Task? _loop;

    public void Start()
    {
        _stop?.Dispose();
        _stop = new CancellationTokenSource();
        var token = _stop.Token;
        _loop = Task.Run(async () =>
        {
            using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1));
            while (await timer.WaitForNextTickAsync(token).ConfigureAwait(false))
            {
                foreach (var i in Enumerable.Range(0, edges))
                {
                    await ScrapeAsync(i, token).ConfigureAwait(false);
                }
            }
        }, token);
    }

    public async Task StopAsync()
    {
        await _stop!.CancelAsync().ConfigureAwait(false);
        try
        {
            await _loop!.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>The sum over every edge of the samples named <paramref name="name"/> (none: 0).</summary>
    public async Task<double> SumAsync(string name, CancellationToken cancellationToken)
    {
        var total = 0.0;
        foreach (var i in Enumerable.Range(0, edges))
        {
            total += PrometheusText.Sum(PrometheusText.Parse(await ScrapeAsync(i, cancellationToken).ConfigureAwait(false)), name) ?? 0;
        }

        return total;
    }

    public void Dispose()
    {
        _stop?.Dispose();
        _http.Dispose();
    }

    private Task<string> ScrapeAsync(int edge, CancellationToken cancellationToken) =>
        _http.GetStringAsync(new Uri(FormattableString.Invariant($"http://127.0.0.1:{portBase + edge}/metrics")), cancellationToken);
}
