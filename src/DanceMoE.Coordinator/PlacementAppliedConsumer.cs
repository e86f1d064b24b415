using DanceMoE.Contracts;
using DanceMoE.Hosting;
using MassTransit;

namespace DanceMoE.Coordinator;

/// <summary>Collects the edges' acknowledgements of placement versions.</summary>
public sealed class PlacementAppliedConsumer(PlacementAcknowledgements acknowledgements) : IConsumer<PlacementApplied>
{
    public Task Consume(ConsumeContext<PlacementApplied> context)
    {
        // An id no edge can have names no queue the migration waits on; counting it would only grow the table.
        if (EdgeQueues.Problem(context.Message.EdgeId) is null && context.Message.Version >= 0)
        {
            acknowledgements.Record(context.Message.EdgeId, context.Message.Version);
        }

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
