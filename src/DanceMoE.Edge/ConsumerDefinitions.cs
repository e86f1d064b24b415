using DanceMoE.Hosting;
using MassTransit;
using Microsoft.Extensions.Options;

namespace DanceMoE.Edge;

/// <summary>Generation requests on the edge's own queue (<see cref="EdgeQueues.Requests"/>).</summary>
public sealed class GenerateTextConsumerDefinition : ConsumerDefinition<GenerateTextConsumer>
{
    public GenerateTextConsumerDefinition(IOptions<EdgeOptions> options)
    {
        ArgumentNullException.ThrowIfNull(options);
        EndpointName = EdgeQueues.Requests(options.Value.Id);
    }

    protected override void ConfigureConsumer(
        IReceiveEndpointConfigurator endpointConfigurator, IConsumerConfigurator<GenerateTextConsumer> consumerConfigurator, IRegistrationContext context)
    {
        // One generation at a time: the dense part is this edge's own CPU or GPU.
        endpointConfigurator.PrefetchCount = 8;
        endpointConfigurator.ConcurrentMessageLimit = 1;
    }
}

/// <summary>Peers' expert batches on the edge's experts queue (<see cref="EdgeQueues.Experts"/>).</summary>
public sealed class RunExpertBatchConsumerDefinition : ConsumerDefinition<RunExpertBatchConsumer>
{
    public RunExpertBatchConsumerDefinition(IOptions<EdgeOptions> options)
    {
        ArgumentNullException.ThrowIfNull(options);
        EndpointName = EdgeQueues.Experts(options.Value.Id);
    }

    protected override void ConfigureConsumer(
        IReceiveEndpointConfigurator endpointConfigurator, IConsumerConfigurator<RunExpertBatchConsumer> consumerConfigurator, IRegistrationContext context)
    {
        // Peers' expert work has its own queue, so it is never stuck behind a long generation.
        endpointConfigurator.PrefetchCount = 32;
        endpointConfigurator.ConcurrentMessageLimit = 4;
    }
}

/// <summary>
/// The control commands (loads, unloads, placements) share the edge's control queue (<see cref="EdgeQueues.Control"/>),
/// one message at a time, so a placement and a migration step never interleave.
/// </summary>
public abstract class ControlConsumerDefinition<TConsumer> : ConsumerDefinition<TConsumer>
    where TConsumer : class, IConsumer
{
    protected ControlConsumerDefinition(IOptions<EdgeOptions> options)
    {
        ArgumentNullException.ThrowIfNull(options);
        EndpointName = EdgeQueues.Control(options.Value.Id);
    }

    protected override void ConfigureConsumer(
        IReceiveEndpointConfigurator endpointConfigurator, IConsumerConfigurator<TConsumer> consumerConfigurator, IRegistrationContext context)
    {
        endpointConfigurator.ConcurrentMessageLimit = 1;
    }
}

public sealed class LoadExpertConsumerDefinition(IOptions<EdgeOptions> options) : ControlConsumerDefinition<LoadExpertConsumer>(options);

public sealed class UnloadExpertConsumerDefinition(IOptions<EdgeOptions> options) : ControlConsumerDefinition<UnloadExpertConsumer>(options);

public sealed class PlacementActivatedConsumerDefinition(IOptions<EdgeOptions> options) : ControlConsumerDefinition<PlacementActivatedConsumer>(options);
