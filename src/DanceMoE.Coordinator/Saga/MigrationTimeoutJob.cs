using DanceMoE.Contracts;
using DanceMoE.Data;
using DanceMoE.Hosting;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Quartz;

namespace DanceMoE.Coordinator.Saga;

/// <summary>
/// The saga's timer (MassTransit's schedulers need a broker plugin or a package we do not have): every few hundred
/// milliseconds, each running migration whose step is past its deadline is told so, with the stage that timed out.
/// A scan that fails (PostgreSQL down) is logged when the failures start and when they end, not twice a second.
/// </summary>
[DisallowConcurrentExecution]
public sealed class MigrationTimeoutJob(
    IDbContextFactory<DanceMoEDbContext> dbFactory, IBus bus, TimeProvider time, OutageLog<MigrationTimeoutJob> outage) : IJob
{
    public static readonly JobKey Key = new("migration-timeouts", "coordinator");

    public static readonly TriggerKey ScheduleKey = new("migration-timeouts-schedule", "coordinator");

    private const string Work = "the scan for migration steps past their deadline";

    public async ValueTask Execute(IJobExecutionContext context, CancellationToken cancellationToken)
    {
        try
        {
            await ScanAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            outage.Failed(Work, ex);
            return;
        }

        outage.Succeeded(Work);
    }

    private async Task ScanAsync(CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow();
        await using var db = await dbFactory.CreateDbContextAsync(cancellationToken).ConfigureAwait(false);
        var late = await db.Migrations.AsNoTracking()
            .Where(m => MigrationStateName.Running.Contains(m.CurrentState) && m.DeadlineAt != null && m.DeadlineAt < now)
            .Select(m => new { m.CorrelationId, m.Stage })
            .ToListAsync(cancellationToken).ConfigureAwait(false);
        foreach (var migration in late)
        {
            // Not confirmed in time (a node lost): the next scan publishes it again, since the step is still late.
            using var confirm = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            confirm.CancelAfter(SendConfirmDeadline.DefaultTimeout);
            await bus.Publish(new MigrationStepTimedOut { MigrationId = migration.CorrelationId, Stage = migration.Stage }, confirm.Token).ConfigureAwait(false);
        }
    }
}
