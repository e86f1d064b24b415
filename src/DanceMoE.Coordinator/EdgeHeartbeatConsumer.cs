using DanceMoE.Contracts;
using DanceMoE.Data;
using MassTransit;
using Microsoft.EntityFrameworkCore;

namespace DanceMoE.Coordinator;

/// <summary>
/// Records each edge's last heartbeat in <c>edge_servers</c> (the membership analysts see) and in
/// <see cref="ClusterMembership"/> (the one the placement job uses, with the experts each edge has loaded).
/// </summary>
public sealed class EdgeHeartbeatConsumer(IDbContextFactory<DanceMoEDbContext> dbFactory, ClusterMembership membership) : IConsumer<EdgeHeartbeat>
{
    public async Task Consume(ConsumeContext<EdgeHeartbeat> context)
    {
        var beat = context.Message;
        var seenAt = beat.SentAt == default ? DateTimeOffset.UtcNow : beat.SentAt;
        membership.Record(beat with { SentAt = seenAt });
        await using var db = await dbFactory.CreateDbContextAsync(context.CancellationToken).ConfigureAwait(false);
        var edge = await db.EdgeServers.FindAsync([beat.EdgeId], context.CancellationToken).ConfigureAwait(false);
        if (edge is null)
        {
            edge = new EdgeServer { Id = beat.EdgeId, ExecutionProvider = beat.ExecutionProvider, FirstSeenAt = seenAt };
            db.EdgeServers.Add(edge);
        }

        edge.MemoryBudgetBytes = beat.MemoryBudgetBytes;
        edge.MemoryUsedBytes = beat.MemoryUsedBytes;
        edge.ComputeClass = beat.ComputeClass;
        edge.ExecutionProvider = beat.ExecutionProvider;
        edge.LastSeenAt = seenAt;
        await db.SaveChangesAsync(context.CancellationToken).ConfigureAwait(false);
    }
}

/// <summary>Heartbeats are frequent and idempotent: a concurrent first insert is retried as an update.</summary>
public sealed class EdgeHeartbeatConsumerDefinition : ConsumerDefinition<EdgeHeartbeatConsumer>
{
    public EdgeHeartbeatConsumerDefinition()
    {
        EndpointName = "coordinator-heartbeats";
        ConcurrentMessageLimit = 4;
    }

    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpointConfigurator,
        IConsumerConfigurator<EdgeHeartbeatConsumer> consumerConfigurator, IRegistrationContext context)
    {
        endpointConfigurator.UseMessageRetry(r => r.Intervals(100, 500, 1000));
    }
}
