using System.Diagnostics.Metrics;
using System.Net;
using System.Text;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DanceMoE.Hosting.Metrics;

/// <summary>
/// One small HTTP listener for <c>/metrics</c> (Prometheus text), <c>/healthz</c> (the process is up) and <c>/readyz</c>
/// (<see cref="IReadinessCheck"/>: 200, or 503 with a one-line reason). Nothing listens without <see cref="MetricsOptions.Port"/>.
/// </summary>
public sealed class MetricsServer(IOptions<MetricsOptions> options, IEnumerable<Meter> meters, IReadinessCheck readiness, ILogger<MetricsServer> logger)
    : IHostedService, IDisposable
{
    private const string PlainText = "text/plain; charset=utf-8";

    private readonly Lock _gate = new();
    private HttpListener? _listener;
    private MetricsRegistry? _registry;
    private Task? _serving;

    /// <summary>Starts listening now (idempotent): an edge calls it before it loads its experts, so probes answer meanwhile.</summary>
    /// <exception cref="HttpListenerException">The port is taken or the address cannot be bound.</exception>
    public void Start()
    {
        var settings = options.Value;
        lock (_gate)
        {
            if (!settings.Enabled || _listener is not null)
            {
                return;
            }

            _registry = new MetricsRegistry(meters);
            var listener = new HttpListener();
            foreach (var prefix in settings.Prefixes())
            {
                listener.Prefixes.Add(prefix);
            }

            listener.Start();
            _listener = listener;
            _serving = Task.Run(() => ServeAsync(listener));
            logger.LogInformation("metrics and probes on {Prefix} (/metrics, /healthz, /readyz)", settings.Prefixes()[0]);
        }
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        Start();
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        Task? serving;
        lock (_gate)
        {
            _listener?.Stop();
            serving = _serving;
        }

        if (serving is not null)
        {
            await serving.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _listener?.Close();
            _registry?.Dispose();
        }
    }

    private async Task ServeAsync(HttpListener listener)
    {
        while (listener.IsListening)
        {
            HttpListenerContext context;
            try
            {
                context = await listener.GetContextAsync().ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is HttpListenerException or ObjectDisposedException or InvalidOperationException)
            {
                // Stop() ends the pending GetContextAsync with one of these.
                return;
            }

            try
            {
                Answer(context);
            }
            catch (Exception ex) when (ex is HttpListenerException or IOException or ObjectDisposedException)
            {
                // Disposed: the listener answered the request itself (411 for a POST without a length). Escaping here ended
                // the loop, and with it every later probe.
                logger.LogDebug("metrics client went away: {Reason}", ex.Message);
            }
        }
    }

    private void Answer(HttpListenerContext context)
    {
        var response = context.Response;
        var (status, contentType, body) = context.Request.HttpMethod is "GET" or "HEAD"
            ? Route(context.Request.Url?.AbsolutePath)
            : (405, PlainText, "only GET and HEAD\n");
        if (status == 405)
        {
            response.AddHeader("Allow", "GET, HEAD");
        }

        var bytes = Encoding.UTF8.GetBytes(body);
        response.StatusCode = status;
        response.ContentType = contentType;
        response.ContentLength64 = bytes.Length;
        response.OutputStream.Write(bytes);
        response.Close();
    }

    private (int, string, string) Route(string? path) => path switch
    {
        "/metrics" => (200, "text/plain; version=0.0.4; charset=utf-8", _registry!.Scrape()),
        "/healthz" => (200, PlainText, "ok\n"),
        "/readyz" => Ready(),
        _ => (404, PlainText, "not found: /metrics, /healthz, /readyz\n"),
    };

    private (int, string, string) Ready()
    {
        var ready = readiness.Check();
        return (ready.Ready ? 200 : 503, PlainText, ready.Reason + "\n");
    }
}
