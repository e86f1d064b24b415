using Microsoft.Extensions.Logging;
using Quartz;

namespace DanceMoE.Coordinator;

/// <summary>The Quartz placement job: one <see cref="PlacementRunner"/> run per firing, never two at once.</summary>
[DisallowConcurrentExecution]
public sealed class PlacementJob(PlacementRunner runner, ILogger<PlacementJob> logger) : IJob
{
    public static readonly JobKey Key = new("placement", "coordinator");

    public static readonly TriggerKey ScheduleKey = new("placement-schedule", "coordinator");

    /// <summary>Job data key of the <c>RunPlacementNow</c> command id, set on manual firings.</summary>
    public const string CommandIdKey = "command-id";

    public async ValueTask Execute(IJobExecutionContext context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(context);
        Guid? commandId = context.MergedJobDataMap.TryGetValue(CommandIdKey, out var value) && Guid.TryParse(value?.ToString(), out var id) ? id : null;
        var trigger = commandId is null ? "schedule" : "run-now";
        try
        {
            await runner.RunAsync(trigger, commandId, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            logger.LogWarning("placement run ({Trigger}) cancelled: the scheduler is shutting down", trigger);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            logger.LogError(ex, "placement run ({Trigger}) failed", trigger);
            throw new JobExecutionException(ex);
        }
    }
}
