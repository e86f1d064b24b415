using MassTransit;
using Microsoft.Extensions.Logging;

namespace DanceMoE.Hosting;

/// <summary>
/// Lets a message reach its consumer only when its response and fault addresses can be used (see
/// <see cref="ReplyAddressProbe"/>). Any other message is left unconsumed, so MassTransit moves it to the endpoint's
/// <c>_skipped</c> queue, and the consumer goes on with the next one.
/// </summary>
public sealed class ReplyAddressFilter<T>(ReplyAddressProbe probe, ILogger<ReplyAddressProbe> logger) : IFilter<ConsumeContext<T>>
    where T : class
{
    public async Task Send(ConsumeContext<T> context, IPipe<ConsumeContext<T>> next)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(next);
        foreach (var address in new[] { context.ResponseAddress, context.FaultAddress })
        {
            if (address is not null && await probe.ProblemAsync(address, context.CancellationToken).ConfigureAwait(false) is { } problem)
            {
                logger.LogWarning("{MessageType} {MessageId} set aside unconsumed: {Problem}", typeof(T).Name, context.MessageId, problem);
                SetAsideReported.Mark(context);
                return;
            }
        }

        await next.Send(context).ConfigureAwait(false);
    }

    public void Probe(ProbeContext context) => context?.CreateFilterScope("replyAddress");
}

public static class ReplyAddressCheck
{
    /// <summary>Every consumer of the bus gets only messages it can reply to; register before <c>ConfigureEndpoints</c>.</summary>
    public static void UseReplyAddressCheck(this IBusFactoryConfigurator bus, IRegistrationContext context) =>
        bus.UseConsumeFilter(typeof(ReplyAddressFilter<>), context);
}
