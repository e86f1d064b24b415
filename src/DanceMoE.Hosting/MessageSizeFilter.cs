using MassTransit;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace DanceMoE.Hosting;

/// <summary>
/// Sets aside a message larger than its endpoint takes before its message type is deserialized: it is left unconsumed,
/// so MassTransit moves it to the endpoint's <c>_skipped</c> queue (bounded by the broker's policy), and no fault is
/// sent to an address the message names. The broker's own <c>max_message_size</c> refuses larger ones before they
/// reach any queue.
/// </summary>
public sealed class MessageSizeFilter(long maxBytes, ILogger<MessageSizeFilter> logger) : IFilter<ConsumeContext>
{
    /// <summary>What a request or a command carries (ids, a prompt), never tensors.</summary>
    public const long MaxCommandBytes = 1 << 20;

    public Task Send(ConsumeContext context, IPipe<ConsumeContext> next)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(next);
        if (context.ReceiveContext.Body.Length is { } length && length > maxBytes)
        {
            logger.LogWarning(
                "message {MessageId} set aside unread: {Length} bytes on {InputAddress} exceed the endpoint's limit of {MaxBytes} bytes",
                context.MessageId, length, context.ReceiveContext.InputAddress, maxBytes);
            SetAsideReported.Mark(context);
            ReleaseMemorySoon();
            return Task.CompletedTask;
        }

        return next.Send(context);
    }

    public void Probe(ProbeContext context) => context?.CreateFilterScope("messageSize");

    private static int _releasing;

    // A giant's body sits in pooled and large-object buffers that the runtime keeps for reuse; without an aggressive
    // collection (which also trims the shared array pools) the process stays at its peak. At most one per few seconds,
    // once the giant has been moved aside.
    private static void ReleaseMemorySoon()
    {
        if (Interlocked.Exchange(ref _releasing, 1) == 1)
        {
            return;
        }

        _ = Task.Run(async () =>
        {
            await Task.Delay(TimeSpan.FromSeconds(2)).ConfigureAwait(false);
            Volatile.Write(ref _releasing, 0);
            GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        });
    }
}

public static class MessageSizeLimit
{
    /// <summary>Messages on this endpoint larger than <paramref name="maxBytes"/> are set aside unread.</summary>
    public static void UseMessageSizeLimit(this IReceiveEndpointConfigurator endpoint, long maxBytes, IRegistrationContext context)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ArgumentNullException.ThrowIfNull(context);
        endpoint.UseFilter(new MessageSizeFilter(maxBytes, context.GetRequiredService<ILogger<MessageSizeFilter>>()));
    }
}
