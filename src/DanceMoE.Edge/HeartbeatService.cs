using DanceMoE.Contracts;
using MassTransit;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace DanceMoE.Edge;

/// <summary>Announces the edge every few seconds: budget, use, experts held, load, measured expert time, provider.</summary>
public sealed class HeartbeatService(EdgeRuntime edge, IBus bus, ILogger<HeartbeatService> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(edge.Options.HeartbeatSeconds));
        do
        {
            try
            {
                await bus.Publish(Snapshot(), stoppingToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                logger.LogWarning("heartbeat not published: {Reason}", ex.Message);
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false));
    }

    public EdgeHeartbeat Snapshot() => new()
    {
        EdgeId = edge.Options.Id,
        MemoryBudgetBytes = edge.Experts.BudgetBytes,
        MemoryUsedBytes = edge.Experts.UsedBytes,
        LoadedExperts = edge.Experts.LoadedKeys(),
        QueueDepth = edge.InFlight.Count,
        ExpertMilliseconds = Math.Round(edge.Experts.ExpertMilliseconds, 3),
        ExecutionProvider = edge.ExecutionProvider,
        SentAt = DateTimeOffset.UtcNow,
    };
}
