using DanceMoE.Contracts;
using MassTransit;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace DanceMoE.Edge;

/// <summary>Announces the edge every few seconds: budget, use, experts held, load, measured expert time, provider.</summary>
public sealed class HeartbeatService(EdgeRuntime edge, IBus bus, ILogger<HeartbeatService> logger) : BackgroundService
{
    private TimeSpan ConfirmWait => TimeSpan.FromSeconds(Math.Max(edge.Options.HeartbeatSeconds, 1));

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(edge.Options.HeartbeatSeconds));
        do
        {
            try
            {
                var beat = Snapshot();
                // A heartbeat is stale after a few intervals: let the broker drop it rather than queue it. One the broker
                // has not confirmed within an interval (its node lost) is given up, so it cannot hold the bus's send channel;
                // never sooner than a second, which the first publish (it declares the exchange) can take on a busy machine.
                // A stop does not cancel it (MassTransit would log a fault): the stop waits at most that long.
                using var confirmWait = new CancellationTokenSource(ConfirmWait);
                await bus.Publish(beat, c => c.TimeToLive = TimeSpan.FromSeconds(edge.Options.HeartbeatSeconds * 5), confirmWait.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                logger.LogWarning("heartbeat not confirmed by the broker within {Seconds} s; the next one follows", ConfirmWait.TotalSeconds);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                logger.LogWarning("heartbeat not published: {Reason}", ex.Message);
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false));
    }

    public EdgeHeartbeat Snapshot()
    {
        var traces = edge.Traces.State;
        return new()
        {
        EdgeId = edge.Options.Id,
        MemoryBudgetBytes = edge.Experts.BudgetBytes,
        MemoryUsedBytes = edge.Experts.UsedBytes,
        LoadedExperts = edge.Experts.LoadedKeys(),
        QueueDepth = edge.ExpertBatches.Count + edge.Scheduler.ActiveCount + edge.Scheduler.WaitingCount,
        ExpertMilliseconds = Math.Round(edge.Experts.ExpertMilliseconds, 3),
        ExecutionProvider = edge.ExecutionProvider,
        ComputeClass = edge.ComputeClass,
        PlacementVersion = edge.Routing.Current.Version,
        TraceRowsWritten = traces.RowsWritten,
        TraceRowsPending = traces.Pending,
        TraceRowsSpilled = traces.Spilled,
        TraceLagMs = Math.Round(traces.Lag.TotalMilliseconds, 1),
        HeartbeatSeconds = edge.Options.HeartbeatSeconds,
        SentAt = DateTimeOffset.UtcNow,
        };
    }
}
