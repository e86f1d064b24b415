using DanceMoE.Hosting;
using MassTransit;
using Microsoft.Extensions.Logging;

namespace DanceMoE.Edge;

/// <summary>
/// Lets a control message (load, unload, placement) reach its consumer only when the broker vouches that the coordinator
/// sent it: its AMQP <c>user_id</c>, which RabbitMQ checks against the sender's connection, is the coordinator's user.
/// Edges may write to each other's control queues (they bind their own), so the queue alone proves nothing. Any other
/// message is left unconsumed (MassTransit moves it to the <c>_skipped</c> queue) and no fault goes to an address it names.
/// </summary>
public sealed class ControlSenderFilter(string coordinatorUser, ILogger<ControlSenderFilter> logger) : IFilter<ConsumeContext>
{
    public Task Send(ConsumeContext context, IPipe<ConsumeContext> next)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(next);
        var sender = RabbitMqOptions.SenderOf(context);
        if (!string.Equals(sender, coordinatorUser, StringComparison.Ordinal))
        {
            logger.LogWarning(
                "control message {MessageId} refused: sent by RabbitMQ user '{Sender}', not the coordinator's '{Coordinator}'",
                context.MessageId, sender ?? "(none)", coordinatorUser);
            SetAsideReported.Mark(context);
            return Task.CompletedTask;
        }

        return next.Send(context);
    }

    public void Probe(ProbeContext context) => context?.CreateFilterScope("controlSender");
}
