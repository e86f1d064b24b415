using System.Collections.Concurrent;
using System.Diagnostics;
using MassTransit;
using RabbitMQ.Client.Exceptions;

namespace DanceMoE.Hosting;

/// <summary>
/// Request clients on a response endpoint of their own, connected to a running bus: the endpoint's channel sends the requests
/// and takes their answers, and a new endpoint replaces it once the broker rejects one of its publishes. RabbitMQ 3.10.8 can
/// go on rejecting every publish from one channel to a quorum queue whose leader died (a channel that published there while
/// a new leader was being elected; a new channel's publishes are taken), and MassTransit tries a rejected publish again on
/// the same channel until the caller gives up, so the bus's own request client would hang every request to that queue.
/// A send the broker refuses for the user's permissions (ACCESS_REFUSED) fails at once: MassTransit would try it again
/// on a new channel until the caller gives up, and a caller that never does (the demo once) hangs.
/// </summary>
public sealed class RequestChannel : IAsyncDisposable
{
    /// <summary>
    /// The least time between two replacements: while a new leader is elected, a new endpoint's first publishes can be
    /// rejected too, and each replacement declares a queue; without it, publishes that kept being rejected replaced it every
    /// few milliseconds.
    /// </summary>
    public static readonly TimeSpan ReplacementInterval = TimeSpan.FromSeconds(1);

    private readonly IBus _bus;
    private readonly object _gate = new();
    private readonly ConcurrentDictionary<Guid, TaskCompletionSource<OperationInterruptedException>> _watched = new();
    private Generation _current;
    private long? _replacedAt;
    private bool _replacementDue;
    private bool _disposed;

    public RequestChannel(IBus bus)
    {
        _bus = bus ?? throw new ArgumentNullException(nameof(bus));
        _current = Connect();
    }

    /// <summary>How many times a rejected publish replaced the response endpoint.</summary>
    public int Replacements { get; private set; }

    /// <summary>Sends <paramref name="message"/> to <paramref name="destination"/> and waits for its response, as MassTransit's request client does.</summary>
    /// <exception cref="SendRefusedException">The broker refused the request for the user's permissions.</exception>
    public async Task<Response<TResponse>> GetResponse<TRequest, TResponse>(Uri destination, TRequest message, RequestTimeout timeout, CancellationToken cancellationToken)
        where TRequest : class
        where TResponse : class
    {
        var generation = Lease();
        try
        {
            await generation.Handle.Ready.WaitAsync(cancellationToken).ConfigureAwait(false);
            var client = generation.Factory.CreateRequestClient<TRequest>(destination, timeout);
            return await WatchedAsync(
                destination, (id, token) => client.GetResponse<TResponse>(message, request => request.UseExecute(context => context.MessageId = id), token), cancellationToken)
                .ConfigureAwait(false);
        }
        finally
        {
            await ReleaseAsync(generation).ConfigureAwait(false);
        }
    }

    /// <summary>Sends <paramref name="message"/> to <paramref name="destination"/> on the same channel as the requests.</summary>
    /// <exception cref="SendRefusedException">The broker refused the send for the user's permissions.</exception>
    public async Task SendAsync<T>(Uri destination, T message, CancellationToken cancellationToken)
        where T : class
    {
        var generation = Lease();
        try
        {
            await generation.Handle.Ready.WaitAsync(cancellationToken).ConfigureAwait(false);
            var endpoint = await generation.Handle.ReceiveEndpoint.GetSendEndpoint(destination).ConfigureAwait(false);
            await WatchedAsync(destination, async (id, token) =>
            {
                await endpoint.Send(message, context => context.MessageId = id, token).ConfigureAwait(false);
                return true;
            }, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await ReleaseAsync(generation).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Runs <paramref name="send"/> with a message id of its own and stops it once the broker refused a try of it for the
    /// user's permissions: each try is a new message with that id, and the observer of the endpoint reports its refusal.
    /// </summary>
    private async Task<TResult> WatchedAsync<TResult>(Uri destination, Func<Guid, CancellationToken, Task<TResult>> send, CancellationToken cancellationToken)
    {
        var id = NewId.NextGuid();
        var refused = new TaskCompletionSource<OperationInterruptedException>(TaskCreationOptions.RunContinuationsAsynchronously);
        _watched[id] = refused;
        try
        {
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var sending = send(id, stop.Token);
            if (await Task.WhenAny(sending, refused.Task).ConfigureAwait(false) == sending)
            {
                return await sending.ConfigureAwait(false);
            }

            await stop.CancelAsync().ConfigureAwait(false);
            await ((Task)sending).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            var reason = await refused.Task.ConfigureAwait(false);
            throw new SendRefusedException($"the broker refused the send to {destination}: {reason.ShutdownReason?.ReplyText ?? reason.Message}", reason);
        }
        finally
        {
            _watched.TryRemove(id, out _);
        }
    }

    private void ReportFault(SendContext context, Exception exception)
    {
        if (context.MessageId is { } id && _watched.TryGetValue(id, out var refused) && ServiceRefusal.AccessRefusal(exception) is { } refusal)
        {
            refused.TrySetResult(refusal);
        }
    }

    public async ValueTask DisposeAsync()
    {
        Generation current;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            current = _current;
        }

        await current.StopAsync().ConfigureAwait(false);
    }

    private Generation Connect()
    {
        // Tagged as the bus's own endpoint is (HOST_PROCESS_bus_ID), the queue name a client's broker user may declare and read.
        var handle = _bus.ConnectReceiveEndpoint(new TemporaryEndpointDefinition("bus", configureConsumeTopology: false), null, null);
        var generation = new Generation(handle);
        generation.Observer = handle.ReceiveEndpoint.ConnectSendObserver(new SendFaultObserver((context, exception) =>
        {
            if (RejectedPublishRecovery.IsRejection(exception))
            {
                Replace(generation);
            }

            ReportFault(context, exception);
        }));
        return generation;
    }

    private Generation Lease()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _current.InFlight++;
            return _current;
        }
    }

    private async Task ReleaseAsync(Generation generation)
    {
        bool stop;
        lock (_gate)
        {
            generation.InFlight--;
            stop = generation.Retired && generation.InFlight == 0;
        }

        if (stop)
        {
            await generation.StopAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// New requests go through a new endpoint; the rejected one stops once its requests in flight have finished (those
    /// already published wait there for their answers).
    /// </summary>
    private void Replace(Generation rejected)
    {
        bool stop;
        lock (_gate)
        {
            // Only the current endpoint is not retired, and one replacement at most waits for its time.
            if (_disposed || rejected.Retired || _replacementDue)
            {
                return;
            }

            var wait = _replacedAt is { } replacedAt ? ReplacementInterval - Stopwatch.GetElapsedTime(replacedAt) : TimeSpan.Zero;
            if (wait > TimeSpan.Zero)
            {
                _replacementDue = true;
                _ = ReplaceLaterAsync(rejected, wait);
                return;
            }

            rejected.Retired = true;
            _current = Connect();
            _replacedAt = Stopwatch.GetTimestamp();
            Replacements++;
            stop = rejected.InFlight == 0;
        }

        if (stop)
        {
            _ = rejected.StopAsync();
        }
    }

    private async Task ReplaceLaterAsync(Generation rejected, TimeSpan wait)
    {
        await Task.Delay(wait).ConfigureAwait(false);
        lock (_gate)
        {
            _replacementDue = false;
        }

        Replace(rejected);
    }

    private sealed class Generation(HostReceiveEndpointHandle handle)
    {
        private int _stopped;

        public HostReceiveEndpointHandle Handle => handle;

        public IClientFactory Factory { get; } = handle.CreateClientFactory();

        public ConnectHandle? Observer { get; set; }

        public int InFlight { get; set; }

        public bool Retired { get; set; }

        public async Task StopAsync()
        {
            if (Interlocked.Exchange(ref _stopped, 1) == 1)
            {
                return;
            }

            Observer?.Disconnect();
            try
            {
                using var giveUp = new CancellationTokenSource(TimeSpan.FromSeconds(15));
                await handle.StopAsync(giveUp.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or MassTransitException or RabbitMQ.Client.Exceptions.RabbitMQClientException)
            {
                // Its channel is gone with the broker node, or the bus is stopping: nothing left to stop.
            }
        }
    }
}

/// <summary>A send the broker refused for the user's permissions: a setting (which user) to fix, not worth trying again.</summary>
public sealed class SendRefusedException(string message, Exception inner) : Exception(message, inner);
