using DanceMoE.Contracts;
using DanceMoE.Hosting;
using MassTransit;

namespace DanceMoE.Coordinator;

/// <summary>Collects the edges' acknowledgements of placement versions.</summary>
public sealed class PlacementAppliedConsumer(PlacementAcknowledgements acknowledgements) : IConsumer<PlacementApplied>
{
    public Task Consume(ConsumeContext<PlacementApplied> context)
    {
        acknowledgements.Record(context.Message.EdgeId, context.Message.Version);
        return Task.CompletedTask;
    }
}

public sealed class PlacementAppliedConsumerDefinition : ConsumerDefinition<PlacementAppliedConsumer>
{
    public PlacementAppliedConsumerDefinition()
    {
        EndpointName = "coordinator-placement-applied";

        // One at a time, in arrival order: the latest acknowledgement of an edge is the one that counts.
        ConcurrentMessageLimit = 1;
    }

    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpointConfigurator,
        IConsumerConfigurator<PlacementAppliedConsumer> consumerConfigurator, IRegistrationContext context) =>
        endpointConfigurator.UseTransientQueue();
}
