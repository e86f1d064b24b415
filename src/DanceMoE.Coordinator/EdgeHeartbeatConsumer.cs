using DanceMoE.Contracts;
using DanceMoE.Data;
using DanceMoE.Hosting;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging;

namespace DanceMoE.Coordinator;

/// <summary>
/// Records each edge's last heartbeat in <c>edge_servers</c> (the membership analysts see) and in
/// <see cref="ClusterMembership"/> (the one the placement job uses, with the experts each edge has loaded). While
/// PostgreSQL is down only the table falls behind: the next heartbeat writes it again, so a failed write is not a fault.
/// </summary>
public sealed class EdgeHeartbeatConsumer(
    IDbContextFactory<DanceMoEDbContext> dbFactory, ClusterMembership membership, ILogger<EdgeHeartbeatConsumer> logger, OutageLog<EdgeHeartbeatConsumer> outage,
    TimeProvider? time = null)
    : IConsumer<EdgeHeartbeat>
{
    private const string Work = "recording heartbeats in edge_servers";

    public async Task Consume(ConsumeContext<EdgeHeartbeat> context)
    {
        var beat = context.Message;
        if (HeartbeatCheck.Problem(beat, (time ?? TimeProvider.System).GetUtcNow()) is { } problem)
        {
            // Consumed, not faulted: a retry or a fault would not make it any better.
            logger.LogWarning(
                "heartbeat {MessageId} refused: {Problem} (sent by RabbitMQ user '{Sender}')",
                context.MessageId, problem, RabbitMqOptions.SenderOf(context) ?? "(none)");
            return;
        }

        var seenAt = (beat.SentAt == default ? DateTimeOffset.UtcNow : beat.SentAt).ToUniversalTime();
        membership.Record(beat with { SentAt = seenAt });
        try
        {
            await RecordAsync(beat, seenAt, context.CancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (OutageLog.IsDatabaseFailure(ex))
        {
            outage.Failed(Work, ex);
            return;
        }

        outage.Succeeded(Work);
    }

    private async Task RecordAsync(EdgeHeartbeat beat, DateTimeOffset seenAt, CancellationToken cancellationToken)
    {
        await using var db = await dbFactory.CreateDbContextAsync(cancellationToken).ConfigureAwait(false);

        // One atomic upsert: heartbeats of one edge are consumed concurrently and may arrive out of order, so the
        // newest one wins and first_seen_at only moves back.
        await db.Database.ExecuteSqlAsync(
            $"""
            INSERT INTO edge_servers AS e (id, memory_budget_bytes, memory_used_bytes, compute_class, execution_provider, heartbeat_seconds, first_seen_at, last_seen_at)
            VALUES ({beat.EdgeId}, {beat.MemoryBudgetBytes}, {beat.MemoryUsedBytes}, {beat.ComputeClass}, {beat.ExecutionProvider}, {beat.HeartbeatSeconds}, {seenAt}, {seenAt})
            ON CONFLICT (id) DO UPDATE SET
                first_seen_at = LEAST(e.first_seen_at, EXCLUDED.first_seen_at),
                memory_budget_bytes = CASE WHEN EXCLUDED.last_seen_at >= e.last_seen_at THEN EXCLUDED.memory_budget_bytes ELSE e.memory_budget_bytes END,
                memory_used_bytes = CASE WHEN EXCLUDED.last_seen_at >= e.last_seen_at THEN EXCLUDED.memory_used_bytes ELSE e.memory_used_bytes END,
                compute_class = CASE WHEN EXCLUDED.last_seen_at >= e.last_seen_at THEN EXCLUDED.compute_class ELSE e.compute_class END,
                execution_provider = CASE WHEN EXCLUDED.last_seen_at >= e.last_seen_at THEN EXCLUDED.execution_provider ELSE e.execution_provider END,
                heartbeat_seconds = CASE WHEN EXCLUDED.last_seen_at >= e.last_seen_at THEN EXCLUDED.heartbeat_seconds ELSE e.heartbeat_seconds END,
                last_seen_at = GREATEST(e.last_seen_at, EXCLUDED.last_seen_at)
            """,
            cancellationToken).ConfigureAwait(false);
    }
}

/// <summary>Heartbeats are frequent and idempotent; a transient error other than the database's is retried.</summary>
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
        endpointConfigurator.UseTransientQueue();
        endpointConfigurator.UseMessageRetry(r => r.Intervals(100, 500, 1000));
    }
}
