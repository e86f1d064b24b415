using DanceMoE.Contracts;
using MassTransit;

namespace DanceMoE.Coordinator;

/// <summary>Collects the edges' acknowledgements of placement versions.</summary>
public sealed class PlacementAppliedConsumer(PlacementAcknowledgements acknowledgements) : IConsumer<PlacementApplied>
{
    public Task Consume(ConsumeContext<PlacementApplied> context)
    {
        acknowledgements.Record(context.Message.EdgeId, context.Message.Version, context.SentTime is { } sent ? new DateTimeOffset(sent, TimeSpan.Zero) : DateTimeOffset.UtcNow);
        return Task.CompletedTask;
    }
}

public sealed class PlacementAppliedConsumerDefinition : ConsumerDefinition<PlacementAppliedConsumer>
{
    public PlacementAppliedConsumerDefinition()
    {
        EndpointName = "coordinator-placement-applied";
    }
}
