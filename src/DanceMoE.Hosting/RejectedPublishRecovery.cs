using MassTransit;
using MassTransit.RabbitMqTransport;

namespace DanceMoE.Hosting;

/// <summary>
/// Closes a receive endpoint's channel when the broker rejects a publish sent while consuming one of its messages, so that
/// MassTransit opens a new channel for the endpoint's consumer and sends. The same RabbitMQ 3.10.8 behaviour as in
/// <see cref="RequestChannel"/>: after a quorum queue's leader died, the broker can go on rejecting every publish of one
/// channel to it, and MassTransit would try each again on that channel until the consumer's deadline (the coordinator's
/// commands to an edge, an edge's answers to the migration saga). The consumed message is retried or delivered again.
/// </summary>
public static class RejectedPublishRecovery
{
    /// <summary>The observer every host's bus connects (<see cref="RabbitMqOptions.ConfigureHost"/>).</summary>
    public static ISendObserver Observer() => new SendFaultObserver((context, exception) =>
    {
        if (IsRejection(exception))
        {
            CloseConsumingChannel(context, exception);
        }
    });

    private static void CloseConsumingChannel(SendContext context, Exception exception)
    {
        if (context.TryGetPayload(out ConsumeContext? consumed) && consumed.ReceiveContext.TryGetPayload(out ChannelContext? channel))
        {
            LogContext.Warning?.Log(exception, "The broker rejected a publish to {Destination} while consuming {InputAddress}: closing the endpoint's channel so that a new one replaces it",
                context.DestinationAddress, consumed.ReceiveContext.InputAddress);

            // Not awaited: the channel's shutdown waits for the delivery being consumed, which waits for this send.
            _ = CloseAsync(channel);
        }
    }

    /// <summary>Whether the broker rejected (nacked) the publish; a returned message (no queue bound) is not a rejection.</summary>
    internal static bool IsRejection(Exception? exception)
    {
        for (; exception is not null; exception = exception.InnerException)
        {
            if (exception is RabbitMQ.Client.Exceptions.PublishException { IsReturn: false })
            {
                return true;
            }
        }

        return false;
    }

    private static async Task CloseAsync(ChannelContext channel)
    {
        await Task.Yield();
        try
        {
            await channel.Channel.CloseAsync(RabbitMQ.Client.Constants.ReplySuccess, "the broker rejected a publish; a new channel replaces this one", abort: true).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is RabbitMQ.Client.Exceptions.RabbitMQClientException or IOException or ObjectDisposedException)
        {
            // Already closed with its connection.
        }
    }
}

/// <summary>Calls <paramref name="faulted"/> for each send that failed.</summary>
public sealed class SendFaultObserver(Action<SendContext, Exception> faulted) : ISendObserver
{
    public Task PreSend<T>(SendContext<T> context)
        where T : class => Task.CompletedTask;

    public Task PostSend<T>(SendContext<T> context)
        where T : class => Task.CompletedTask;

    public Task SendFault<T>(SendContext<T> context, Exception exception)
        where T : class
    {
        if (context is not null)
        {
            faulted(context, exception);
        }

        return Task.CompletedTask;
    }
}
