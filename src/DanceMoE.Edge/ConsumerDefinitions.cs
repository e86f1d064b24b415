using DanceMoE.Hosting;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DanceMoE.Edge;

/// <summary>Generation requests on the edge's own queue (<see cref="EdgeQueues.Requests"/>).</summary>
public sealed class GenerateTextConsumerDefinition : ConsumerDefinition<GenerateTextConsumer>
{
    private readonly int _concurrency;

    public GenerateTextConsumerDefinition(IOptions<EdgeOptions> options)
    {
        ArgumentNullException.ThrowIfNull(options);
        EndpointName = EdgeQueues.Requests(options.Value.Id);

        // Every active and waiting request holds a consumer while the step scheduler serves it, and a burst beyond them
        // must reach the scheduler to be refused at once rather than wait unseen in the broker's queue.
        _concurrency = options.Value.MaxActive + options.Value.MaxWaiting + 16;
    }

    protected override void ConfigureConsumer(
        IReceiveEndpointConfigurator endpointConfigurator, IConsumerConfigurator<GenerateTextConsumer> consumerConfigurator, IRegistrationContext context)
    {
        endpointConfigurator.UseQuorumQueue();
        endpointConfigurator.PrefetchCount = _concurrency;
        endpointConfigurator.ConcurrentMessageLimit = _concurrency;
        endpointConfigurator.UseMessageSizeLimit(MessageSizeFilter.MaxCommandBytes, context);
    }
}

/// <summary>
/// Cancels share the requests' queue (<see cref="EdgeQueues.Requests"/>), which a requester may already send to, and its
/// settings (<see cref="GenerateTextConsumerDefinition"/>): a cancel takes one of the 16 consumers beyond the active and
/// waiting requests' for an instant.
/// </summary>
public sealed class CancelGenerationConsumerDefinition : ConsumerDefinition<CancelGenerationConsumer>
{
    public CancelGenerationConsumerDefinition(IOptions<EdgeOptions> options)
    {
        ArgumentNullException.ThrowIfNull(options);
        EndpointName = EdgeQueues.Requests(options.Value.Id);
    }
}

/// <summary>Peers' expert batches on the edge's experts queue (<see cref="EdgeQueues.Experts"/>).</summary>
public sealed class RunExpertBatchConsumerDefinition : ConsumerDefinition<RunExpertBatchConsumer>
{
    private readonly int _concurrency;
    private readonly long _maxMessageBytes;

    public RunExpertBatchConsumerDefinition(IOptions<EdgeOptions> options)
    {
        ArgumentNullException.ThrowIfNull(options);
        EndpointName = EdgeQueues.Experts(options.Value.Id);
        _concurrency = options.Value.ExpertConcurrency > 0 ? options.Value.ExpertConcurrency : Environment.ProcessorCount;

        // The payload travels as base64 inside JSON, beside a slice list bounded by the number of experts. Up to twice the
        // batch limit the consumer reads it and answers a fault that names the limit; beyond, it is set aside unread.
        _maxMessageBytes = (2 * options.Value.MaxBatchBytes * 4L / 3) + MessageSizeFilter.MaxCommandBytes;
    }

    protected override void ConfigureConsumer(
        IReceiveEndpointConfigurator endpointConfigurator, IConsumerConfigurator<RunExpertBatchConsumer> consumerConfigurator, IRegistrationContext context)
    {
        // Peers' expert work has its own queue, so it is never stuck behind a long generation.
        endpointConfigurator.UseTransientQueue();
        endpointConfigurator.PrefetchCount = 32;
        endpointConfigurator.ConcurrentMessageLimit = _concurrency;
        endpointConfigurator.UseMessageSizeLimit(_maxMessageBytes, context);
    }
}

/// <summary>
/// The control commands (loads, unloads, placements) share the edge's control queue (<see cref="EdgeQueues.Control"/>),
/// one message at a time, so a placement and a migration step never interleave.
/// </summary>
public abstract class ControlConsumerDefinition<TConsumer> : ConsumerDefinition<TConsumer>
    where TConsumer : class, IConsumer
{
    private readonly string _coordinatorUser;

    protected ControlConsumerDefinition(IOptions<EdgeOptions> options)
    {
        ArgumentNullException.ThrowIfNull(options);
        EndpointName = EdgeQueues.Control(options.Value.Id);
        _coordinatorUser = options.Value.CoordinatorUser;
    }

    protected override void ConfigureConsumer(
        IReceiveEndpointConfigurator endpointConfigurator, IConsumerConfigurator<TConsumer> consumerConfigurator, IRegistrationContext context)
    {
        endpointConfigurator.UseQuorumQueue();
        endpointConfigurator.ConcurrentMessageLimit = 1;
        endpointConfigurator.UseFilter(new ControlSenderFilter(_coordinatorUser, context.GetRequiredService<ILogger<ControlSenderFilter>>()));

        // A placement lists every expert of every layer: far more than a request, still no tensors.
        endpointConfigurator.UseMessageSizeLimit(16 * MessageSizeFilter.MaxCommandBytes, context);
    }
}

public sealed class LoadExpertConsumerDefinition(IOptions<EdgeOptions> options) : ControlConsumerDefinition<LoadExpertConsumer>(options);

public sealed class UnloadExpertConsumerDefinition(IOptions<EdgeOptions> options) : ControlConsumerDefinition<UnloadExpertConsumer>(options);

public sealed class PlacementActivatedConsumerDefinition(IOptions<EdgeOptions> options) : ControlConsumerDefinition<PlacementActivatedConsumer>(options);
