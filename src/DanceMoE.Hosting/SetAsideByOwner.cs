using System.Text.Json;
using MassTransit;
using MassTransit.Middleware;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DanceMoE.Hosting;

/// <summary>
/// MassTransit sets a faulted or unconsumed message aside (to <c>NAME_error</c>, <c>NAME_skipped</c>) by publishing it again
/// with its original properties, <c>user_id</c> included. The broker lets only that user publish it so: for a message
/// another role sent (a client's request, an edge's heartbeat), it closes the consumer's channel instead, the message
/// comes back, faults again, and the endpoint churns (every request in flight on it with it) until the message expires.
/// So a message is set aside only when this process's own user sent it, or no one vouched for a sender; any other is
/// logged and dropped. Its sender has its fault already (a request's fault goes to its response address). A message
/// moved to <c>_skipped</c> that no filter has said why of (<see cref="SetAsideReported"/>) had no consumer of its type
/// there: that is logged too, as MassTransit does only at debug level.
/// </summary>
public sealed class SetAsideByOwner(string user, ILogger<SetAsideByOwner> logger) : IFilter<ExceptionReceiveContext>, IFilter<ReceiveContext>
{
    private readonly IFilter<ExceptionReceiveContext> _moveToError = new ErrorTransportFilter();
    private readonly IFilter<ReceiveContext> _moveToSkipped = new DeadLetterTransportFilter();

    public Task Send(ExceptionReceiveContext context, IPipe<ExceptionReceiveContext> next)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(next);
        if (ForeignSender(context) is not { } sender)
        {
            return _moveToError.Send(context, next);
        }

        logger.LogWarning(
            "message {MessageId} on {InputAddress} from broker user '{Sender}' faulted ({Reason}) and is dropped, not moved to the _error queue: only '{Sender}' may publish it with its user_id",
            context.GetMessageId(), context.InputAddress, sender, context.Exception.Message, sender);
        return next.Send(context);
    }

    public Task Send(ReceiveContext context, IPipe<ReceiveContext> next)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(next);
        if (ForeignSender(context) is not { } sender)
        {
            if (!context.TryGetPayload<SetAsideReported>(out _))
            {
                logger.LogWarning(
                    "message {MessageId} ({MessageTypes}) on {InputAddress} from broker user '{Sender}' has no consumer there and is moved to the _skipped queue",
                    context.GetMessageId(), MessageTypes(context), context.InputAddress, RabbitMqOptions.SenderOf(context) ?? "(none)");
            }

            return _moveToSkipped.Send(context, next);
        }

        logger.LogWarning(
            "message {MessageId} ({MessageTypes}) on {InputAddress} from broker user '{Sender}' was not consumed and is dropped, not moved to the _skipped queue: only '{Sender}' may publish it with its user_id",
            context.GetMessageId(), MessageTypes(context), context.InputAddress, sender, sender);
        return next.Send(context);
    }

    public void Probe(ProbeContext context) => context?.CreateFilterScope("setAsideByOwner");

    // MassTransit keeps no deserialized context of a message left unconsumed; its envelope names its types.
    private static string MessageTypes(ReceiveContext context)
    {
        try
        {
            var json = new Utf8JsonReader(context.Body.GetBytes());
            if (json.Read() && json.TokenType == JsonTokenType.StartObject)
            {
                while (json.Read() && json.TokenType == JsonTokenType.PropertyName)
                {
                    if (json.ValueTextEquals("messageType") && json.Read() && json.TokenType == JsonTokenType.StartArray)
                    {
                        var types = new List<string>();
                        while (json.Read() && json.TokenType == JsonTokenType.String)
                        {
                            types.Add(json.GetString()!);
                        }

                        return types.Count > 0 ? string.Join(", ", types) : "type unknown";
                    }

                    json.Skip();
                }
            }
        }
        catch (JsonException)
        {
            // Not a JSON envelope (an expert batch's binary body, garbage).
        }

        return "type unknown";
    }

    private string? ForeignSender(ReceiveContext context) =>
        RabbitMqOptions.SenderOf(context) is { Length: > 0 } sender && !string.Equals(sender, user, StringComparison.Ordinal) ? sender : null;
}

/// <summary>Marks a message that a filter leaves unconsumed on purpose and has logged why, so its move to <c>_skipped</c> is not logged twice.</summary>
public sealed class SetAsideReported
{
    private static readonly SetAsideReported Instance = new();

    private SetAsideReported()
    {
    }

    public static void Mark(ConsumeContext context) => context?.ReceiveContext.GetOrAddPayload(() => Instance);
}

public static class SetAsideByOwnerConfiguration
{
    /// <summary>Every endpoint that <c>ConfigureEndpoints</c> configures sets aside only what its own user may publish again.</summary>
    public static void AddSetAsideByOwner(this IBusRegistrationConfigurator bus)
    {
        ArgumentNullException.ThrowIfNull(bus);
        bus.AddConfigureEndpointsCallback((context, _, endpoint) =>
        {
            var user = RabbitMqOptions.Parse(context.GetRequiredService<IOptions<RabbitMqOptions>>().Value.ConnectionString).Username;
            var filter = new SetAsideByOwner(user, context.GetRequiredService<ILogger<SetAsideByOwner>>());
            endpoint.ConfigureError(x =>
            {
                x.UseFilter(new GenerateFaultFilter());
                x.UseFilter<ExceptionReceiveContext>(filter);
            });
            endpoint.ConfigureDeadLetter(x => x.UseFilter<ReceiveContext>(filter));
        });
    }
}
