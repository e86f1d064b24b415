using MassTransit;

namespace DanceMoE.Hosting;

/// <summary>
/// How long a consumer waits for the broker to confirm a command it sends to a quorum queue. Without a bound such a send
/// can wait forever when a node is lost or the queue's majority is away: RabbitMQ.Client fails a lost connection's pending
/// confirms only after its consumers finished, and MassTransit does not reconnect meanwhile, so the consumer (a saga with
/// one message at a time) would hang with its endpoint. Each send gets its own deadline, counted from the send, so a slow
/// database before it takes nothing from it; an outbox that releases the sends later releases them with these tokens.
/// </summary>
public sealed class SendConfirmDeadline : IDisposable
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(10);

    private readonly Lock _lock = new();
    private readonly List<CancellationTokenSource> _sends = [];
    private bool _disposed;

    public SendConfirmDeadline(TimeSpan timeout)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(timeout, TimeSpan.Zero);
        Timeout = timeout;
    }

    public TimeSpan Timeout { get; }

    /// <summary>Whether a send's deadline passed.</summary>
    public bool Expired
    {
        get
        {
            lock (_lock)
            {
                return _sends.Exists(s => s.IsCancellationRequested);
            }
        }
    }

    /// <summary>
    /// A token for one send of the message <paramref name="context"/> consumes, cancelled <see cref="Timeout"/> after this
    /// call; none where its endpoint has no <see cref="SendConfirmDeadlineExtensions.UseSendConfirmDeadline"/>.
    /// </summary>
    public static CancellationToken For(ConsumeContext context) =>
        context is not null && context.TryGetPayload(out SendConfirmDeadline? deadline) ? deadline.Next() : CancellationToken.None;

    /// <summary>
    /// Awaits <paramref name="send"/>, made with <paramref name="deadline"/> (from <see cref="For"/>); a send cancelled by
    /// it fails as <see cref="SendNotConfirmedException"/> naming <paramref name="what"/>, so the consumed message's fault says so.
    /// </summary>
    public static async Task Confirmed(Task send, string what, CancellationToken deadline)
    {
        ArgumentNullException.ThrowIfNull(send);
        try
        {
            await send.ConfigureAwait(false);
        }
        catch (OperationCanceledException ex) when (deadline.IsCancellationRequested)
        {
            throw new SendNotConfirmedException($"the broker did not confirm {what} in time (a node lost, or the queue's majority away)", ex);
        }
    }

    public CancellationToken Next()
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var send = new CancellationTokenSource(Timeout);
            _sends.Add(send);
            return send.Token;
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
            foreach (var send in _sends)
            {
                send.Dispose();
            }

            _sends.Clear();
        }
    }
}

/// <summary>The broker did not confirm a command within its <see cref="SendConfirmDeadline"/>; the message is retried, then faulted.</summary>
public sealed class SendNotConfirmedException(string message, Exception inner) : Exception(message, inner);

/// <summary>Gives every message the endpoint consumes a <see cref="SendConfirmDeadline"/>, and names a send that passed it.</summary>
public sealed class SendConfirmDeadlineFilter(TimeSpan timeout) : IFilter<ConsumeContext>
{
    public async Task Send(ConsumeContext context, IPipe<ConsumeContext> next)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(next);
        using var deadline = new SendConfirmDeadline(timeout);
        context.AddOrUpdatePayload(() => deadline, _ => deadline);
        try
        {
            await next.Send(context).ConfigureAwait(false);
        }
        catch (OperationCanceledException ex) when (deadline.Expired && !context.CancellationToken.IsCancellationRequested)
        {
            throw new SendNotConfirmedException(
                $"the broker did not confirm a command sent while consuming message {context.MessageId} within {timeout.TotalSeconds:0.#} s (a node lost, or the queue's majority away)", ex);
        }
    }

    public void Probe(ProbeContext context) => context?.CreateFilterScope("sendConfirmDeadline");
}

public static class SendConfirmDeadlineExtensions
{
    /// <summary>Bounds the confirms awaited by sends that pass <see cref="SendConfirmDeadline.For"/>; add it before an outbox, so it sees the outbox's sends fail.</summary>
    public static void UseSendConfirmDeadline(this IReceiveEndpointConfigurator endpoint, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        endpoint.UseFilter(new SendConfirmDeadlineFilter(timeout ?? SendConfirmDeadline.DefaultTimeout));
    }
}
