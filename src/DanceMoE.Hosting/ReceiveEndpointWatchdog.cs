using System.Collections.Concurrent;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DanceMoE.Hosting;

/// <summary>
/// Restarts a receive endpoint that stopped consuming for good. MassTransit's receive transport retries a lost connection,
/// but it leaves its retry loop, silently and for good, when starting the transport throws an
/// <see cref="OperationCanceledException"/> that is not its own stop: RabbitMQ.Client cancels the calls in flight
/// (declaring the queue, <c>basic.consume</c>) when the connection drops under them, as a second broker node going down
/// during a rolling restart does while the endpoints reconnect. Such an endpoint stays off its queue while the rest of
/// the bus serves. An endpoint not consuming for <see cref="StuckAfter"/> while another one of the bus came back since
/// (so the broker is there), or for <see cref="AloneStuckAfter"/> in any case, is stopped and started again, once the
/// broker confirms that its queue has no consumer (or is gone): MassTransit may report a reconnected consumer ready
/// before the old one completed, and restarting an endpoint that consumes stops its send transports under the sends in flight.
/// The bus's own endpoint (its reply queue) is never restarted: MassTransit's sends and request clients live on its
/// context, and a stop and start of it left every send of the process failing for good; a dead one is logged as an error.
/// An endpoint MassTransit reports consuming is asked after at the broker every <see cref="BrokerCheckEvery"/>: one whose
/// queue has had no consumer (or is gone) for <see cref="AloneStuckAfter"/> is down too, whatever MassTransit says. That is an
/// endpoint whose channel died without MassTransit hearing of it: RabbitMQ.Client tells a lost connection's channels one
/// after another, each once its deliveries in flight returned, so one consumer that outlives its channel keeps the others deaf.
/// </summary>
public sealed partial class ReceiveEndpointWatchdog(
    ILogger<ReceiveEndpointWatchdog> logger, TimeProvider time, IOptions<RabbitMqOptions>? options = null, IServiceProvider? services = null)
    : BackgroundService, IReceiveEndpointObserver
{
    public static readonly TimeSpan StuckAfter = TimeSpan.FromSeconds(8);
    public static readonly TimeSpan AloneStuckAfter = TimeSpan.FromSeconds(30);
    public static readonly TimeSpan BrokerCheckEvery = TimeSpan.FromSeconds(4);
    private static readonly TimeSpan CheckEvery = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(10);

    private readonly ConcurrentDictionary<Uri, Watched> _endpoints = new();
    private long _lastReadyTicks;
    private DateTimeOffset _lastBrokerCheck;
    private RabbitMQ.Client.IConnection? _probe;

    /// <summary>Endpoints the watchdog restarted so far.</summary>
    public long Restarts => Interlocked.Read(ref _restarts);

    private long _restarts;

    public Task Ready(ReceiveEndpointReady ready)
    {
        ArgumentNullException.ThrowIfNull(ready);
        var watched = _endpoints.GetOrAdd(ready.InputAddress, _ => new Watched(ready.ReceiveEndpoint));
        lock (watched)
        {
            watched.Consuming = true;
            watched.Stopped = false;
            watched.UnconsumedSince = null;
        }

        Interlocked.Exchange(ref _lastReadyTicks, time.GetUtcNow().UtcTicks);
        return Task.CompletedTask;
    }

    public Task Stopping(ReceiveEndpointStopping stopping)
    {
        ArgumentNullException.ThrowIfNull(stopping);
        if (_endpoints.TryGetValue(stopping.InputAddress, out var watched))
        {
            lock (watched)
            {
                watched.Stopped |= !watched.Restarting;
                watched.Consuming = false;
            }
        }

        return Task.CompletedTask;
    }

    public Task Completed(ReceiveEndpointCompleted completed)
    {
        ArgumentNullException.ThrowIfNull(completed);
        Down(completed.InputAddress, null);
        return Task.CompletedTask;
    }

    public Task Faulted(ReceiveEndpointFaulted faulted)
    {
        ArgumentNullException.ThrowIfNull(faulted);
        Down(faulted.InputAddress, faulted.Exception);
        return Task.CompletedTask;
    }

    /// <summary>
    /// What the broker said at <paramref name="now"/> of the endpoint's queue: whether it has a consumer (null: it could not
    /// tell). Only an endpoint MassTransit reports consuming is judged by it.
    /// </summary>
    public void Observed(Uri address, bool? consumedAtBroker, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(address);
        if (consumedAtBroker is null || !_endpoints.TryGetValue(address, out var watched))
        {
            return;
        }

        lock (watched)
        {
            watched.UnconsumedSince = !watched.Consuming || watched.Restarting || consumedAtBroker == true ? null : watched.UnconsumedSince ?? now;
        }
    }

    /// <summary>
    /// The endpoints to restart now: not stopped on purpose, and either not consuming and down long enough, or reported
    /// consuming while the broker has shown no consumer on their queue for <see cref="AloneStuckAfter"/> (one run showed a
    /// coordinator's queue without a consumer for 9 s while its endpoint served, so not sooner).
    /// </summary>
    public IReadOnlyList<Uri> Stuck(DateTimeOffset now)
    {
        var lastReady = new DateTimeOffset(Interlocked.Read(ref _lastReadyTicks), TimeSpan.Zero);
        var stuck = new List<Uri>();
        foreach (var (address, watched) in _endpoints)
        {
            lock (watched)
            {
                if (watched.Stopped || watched.Restarting)
                {
                    continue;
                }

                if (watched.Consuming)
                {
                    if (watched.UnconsumedSince is { } since && now - since >= AloneStuckAfter)
                    {
                        stuck.Add(address);
                    }

                    continue;
                }

                var down = now - watched.DownSince;
                if ((down >= StuckAfter && lastReady > watched.DownSince) || down >= AloneStuckAfter)
                {
                    stuck.Add(address);
                }
            }
        }

        return stuck;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(CheckEvery, time);
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
        {
            if (time.GetUtcNow() - _lastBrokerCheck >= BrokerCheckEvery)
            {
                _lastBrokerCheck = time.GetUtcNow();
                await CheckBrokerAsync(stoppingToken).ConfigureAwait(false);
            }

            foreach (var address in Stuck(time.GetUtcNow()))
            {
                await RestartAsync(address, stoppingToken).ConfigureAwait(false);
            }
        }
    }

    private void Down(Uri address, Exception? exception)
    {
        if (!_endpoints.TryGetValue(address, out var watched))
        {
            return;
        }

        lock (watched)
        {
            if (watched.Consuming)
            {
                watched.Consuming = false;
                watched.DownSince = time.GetUtcNow();
            }

            watched.LastFault = exception ?? watched.LastFault;
        }
    }

    /// <summary>Whether the broker has a consumer on the endpoint's queue; null when it cannot tell.</summary>
    private async Task<bool?> ConsumedAsync(Uri address, CancellationToken cancellationToken)
    {
        if (options is null)
        {
            return null;
        }

        var queue = address.Segments[^1].TrimEnd('/');
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(StopTimeout);
            if (_probe is not { IsOpen: true })
            {
                await DisposeProbeAsync().ConfigureAwait(false);
                var broker = RabbitMqOptions.Parse(options.Value.ConnectionString);
                var factory = broker.ConnectionFactory("dancemoe-watchdog");
                factory.AutomaticRecoveryEnabled = false;
                _probe = await factory.CreateConnectionAsync(broker.Endpoints(), timeout.Token).ConfigureAwait(false);
            }

            // A channel per question: the broker closes it when the queue is not there.
            await using var channel = await _probe.CreateChannelAsync(cancellationToken: timeout.Token).ConfigureAwait(false);
            var ok = await channel.QueueDeclarePassiveAsync(queue, timeout.Token).ConfigureAwait(false);
            return ok.ConsumerCount > 0;
        }
        catch (RabbitMQ.Client.Exceptions.OperationInterruptedException ex) when (ex.ShutdownReason?.ReplyCode == 404)
        {
            return false;
        }
        catch (RabbitMQ.Client.Exceptions.OperationInterruptedException ex) when (ex.ShutdownReason?.ReplyCode == 405)
        {
            // RESOURCE_LOCKED: an exclusive queue (an edge's experts queue), which lives only while the connection that declared it
            // does. Asked again at every check although the broker logs each question as a channel error: once the node holding
            // it dies the queue is gone (404), and that is how a bus kept deaf by a stuck channel is found (asked only once,
            // `bench chaos` broker-node-kill left edge-1 answering nothing until node 1 came back in three runs of four).
            return true;
        }
        catch (Exception ex) when (ex is RabbitMQ.Client.Exceptions.RabbitMQClientException or IOException or TimeoutException
            || (ex is OperationCanceledException && !cancellationToken.IsCancellationRequested))
        {
            await DisposeProbeAsync().ConfigureAwait(false);
            return null;
        }
    }

    private async Task CheckBrokerAsync(CancellationToken stoppingToken)
    {
        foreach (var (address, watched) in _endpoints)
        {
            bool consuming;
            lock (watched)
            {
                consuming = watched.Consuming && !watched.Restarting;
            }

            if (consuming && !IsBusEndpoint(address))
            {
                Observed(address, await ConsumedAsync(address, stoppingToken).ConfigureAwait(false), time.GetUtcNow());
            }
        }
    }

    private async Task DisposeProbeAsync()
    {
        var probe = Interlocked.Exchange(ref _probe, null);
        if (probe is not null)
        {
            try
            {
                await probe.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is RabbitMQ.Client.Exceptions.RabbitMQClientException or IOException or ObjectDisposedException)
            {
                // A connection already lost: nothing left to close.
            }
        }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken).ConfigureAwait(false);
        await DisposeProbeAsync().ConfigureAwait(false);
    }

    private async Task RestartAsync(Uri address, CancellationToken stoppingToken)
    {
        var watched = _endpoints[address];
        if (await ConsumedAsync(address, stoppingToken).ConfigureAwait(false) is true)
        {
            lock (watched)
            {
                watched.Consuming = !watched.Stopped;
                watched.UnconsumedSince = null;
            }

            return;
        }

        TimeSpan down;
        if (IsBusEndpoint(address))
        {
            lock (watched)
            {
                down = time.GetUtcNow() - watched.DownSince;
                watched.DownSince = time.GetUtcNow();
            }

            LogBusEndpointDown(logger, address, down.TotalSeconds);
            return;
        }

        string why;
        lock (watched)
        {
            watched.Restarting = true;
            down = time.GetUtcNow() - (watched.Consuming && watched.UnconsumedSince is { } since ? since : watched.DownSince);
            why = watched.Consuming
                ? "MassTransit reports it consuming, but its queue has no consumer at the broker"
                : $"MassTransit is not bringing it back (last fault: {watched.LastFault?.GetType().Name ?? "none"} {watched.LastFault?.Message})";
        }

        Interlocked.Increment(ref _restarts);
        LogRestarting(logger, address, down.TotalSeconds, why);
        try
        {
            using (var stop = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken))
            {
                stop.CancelAfter(StopTimeout);
                await watched.Endpoint.Stop(stop.Token).ConfigureAwait(false);
            }

            watched.Endpoint.Start(stoppingToken);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !stoppingToken.IsCancellationRequested)
        {
            LogRestartFailed(logger, address, ex.Message, ex);
        }
        finally
        {
            lock (watched)
            {
                watched.Restarting = false;
                watched.DownSince = time.GetUtcNow();
                watched.UnconsumedSince = null;
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning,
        Message = "receive endpoint {Address} has not consumed for {Seconds:F0} s and {Why}: restarting it")]
    private static partial void LogRestarting(ILogger logger, Uri address, double seconds, string why);

    private bool IsBusEndpoint(Uri address) =>
        services?.GetService<IBus>()?.Address is { } bus && string.Equals(bus.Segments[^1].TrimEnd('/'), address.Segments[^1].TrimEnd('/'), StringComparison.Ordinal);

    [LoggerMessage(Level = LogLevel.Error,
        Message = "the bus's reply endpoint {Address} has not consumed for {Seconds:F0} s and its queue has no consumer: requests that need replies fail until the process restarts")]
    private static partial void LogBusEndpointDown(ILogger logger, Uri address, double seconds);

    [LoggerMessage(Level = LogLevel.Error, Message = "restarting receive endpoint {Address} failed: {Reason}; trying again later")]
    private static partial void LogRestartFailed(ILogger logger, Uri address, string reason, Exception exception);

    private sealed class Watched(IReceiveEndpoint endpoint)
    {
        public IReceiveEndpoint Endpoint { get; } = endpoint;

        public bool Consuming { get; set; }

        /// <summary>Stopped on purpose (the host stopping): never restarted.</summary>
        public bool Stopped { get; set; }

        public bool Restarting { get; set; }

        public DateTimeOffset DownSince { get; set; }

        /// <summary>Since when the broker has shown no consumer on the queue of an endpoint MassTransit reports consuming.</summary>
        public DateTimeOffset? UnconsumedSince { get; set; }

        public Exception? LastFault { get; set; }
    }
}

public static class ReceiveEndpointWatchdogExtensions
{
    /// <summary>Registers the <see cref="ReceiveEndpointWatchdog"/>, which sees every receive endpoint of the host's bus from its start.</summary>
    public static IServiceCollection AddReceiveEndpointWatchdog(this IServiceCollection services)
    {
        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton<ReceiveEndpointWatchdog>();
        services.AddHostedService(sp => sp.GetRequiredService<ReceiveEndpointWatchdog>());
        services.AddReceiveEndpointObserver(sp => sp.GetRequiredService<ReceiveEndpointWatchdog>());
        return services;
    }
}
