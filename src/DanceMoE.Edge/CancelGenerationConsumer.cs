using DanceMoE.Contracts;
using DanceMoE.Hosting;
using MassTransit;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DanceMoE.Edge;

/// <summary>A requester that gave up cancels its request: the step scheduler drops it at the next step.</summary>
public sealed class CancelGenerationConsumer(GenerationCancellations cancellations, IOptions<EdgeOptions> options, ILogger<CancelGenerationConsumer> logger)
    : IConsumer<CancelGeneration>
{
    public Task Consume(ConsumeContext<CancelGeneration> context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var requestId = context.Message.RequestId;
        var sender = RabbitMqOptions.SenderOf(context);
        switch (cancellations.Cancel(requestId, sender))
        {
            case CancelOutcome.Cancelled:
                logger.LogInformation("{Edge}: request {RequestId} cancelled by its sender '{User}'; it leaves at the next step", options.Value.Id, requestId, sender);
                break;
            case CancelOutcome.NotTheSender:
                logger.LogWarning("{Edge}: a cancel of request {RequestId} from broker user '{User}' refused: only the request's sender may cancel it",
                    options.Value.Id, requestId, sender ?? "(none)");
                break;
            default:
                logger.LogInformation("{Edge}: a cancel of request {RequestId} from '{User}' matches no request served here (finished already, or not arrived yet: kept {Seconds:F0} s)",
                    options.Value.Id, requestId, sender ?? "(none)", GenerationCancellations.EarlyCancelLifetime.TotalSeconds);
                break;
        }

        return Task.CompletedTask;
    }
}
