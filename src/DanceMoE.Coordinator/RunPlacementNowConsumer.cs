using DanceMoE.Contracts;
using DanceMoE.Hosting;
using MassTransit;
using Quartz;

namespace DanceMoE.Coordinator;

/// <summary>Turns <see cref="RunPlacementNow"/> into a one-shot firing of <see cref="PlacementJob"/>, queued behind any run in progress.</summary>
public sealed class RunPlacementNowConsumer(ISchedulerFactory schedulers) : IConsumer<RunPlacementNow>
{
    public async Task Consume(ConsumeContext<RunPlacementNow> context)
    {
        var scheduler = await schedulers.GetScheduler(context.CancellationToken).ConfigureAwait(false);
        var data = new JobDataMap { [PlacementJob.CommandIdKey] = context.Message.CommandId.ToString() };
        await scheduler.TriggerJob(PlacementJob.Key, data, context.CancellationToken).ConfigureAwait(false);
    }
}

public sealed class RunPlacementNowConsumerDefinition : ConsumerDefinition<RunPlacementNowConsumer>
{
    /// <summary>The coordinator's command queue.</summary>
    public const string Queue = "coordinator";

    public RunPlacementNowConsumerDefinition()
    {
        EndpointName = Queue;
        ConcurrentMessageLimit = 1;
    }

    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpointConfigurator,
        IConsumerConfigurator<RunPlacementNowConsumer> consumerConfigurator, IRegistrationContext context)
    {
        endpointConfigurator.UseQuorumQueue();
        endpointConfigurator.UseMessageRetry(r => r.Intervals(200, 1000, 5000));
    }
}
