using DanceMoE.Data;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace DanceMoE.Operations;

/// <summary>How waiting for a migration ended.</summary>
public enum MigrationWaitEnd
{
    /// <summary>The saga reached a final state (Completed or Failed).</summary>
    Finished,

    /// <summary>No saga started for the decision in time.</summary>
    NotStarted,

    /// <summary>The saga was still running when the wait ran out.</summary>
    TimedOut,
}

/// <summary>How waiting for a migration ended, and its row as last read (null when it never started).</summary>
public sealed record MigrationWait(MigrationWaitEnd End, MigrationState? Last);

/// <summary>Follows the migration saga a placement decision started, from its <c>migrations</c> row.</summary>
public static class MigrationWaiter
{
    /// <summary>How long a saga may take to appear after its decision.</summary>
    public static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Polls the first migration of decision <paramref name="decisionId"/> until it is final, <paramref name="timeout"/>
    /// passes, or none started within <see cref="StartTimeout"/>. <paramref name="onProgress"/> sees every row read;
    /// <paramref name="check"/>, when given, runs between polls (to fail early when a process died).
    /// </summary>
    public static async Task<MigrationWait> WaitAsync(
        string postgresUrl, long decisionId, TimeSpan timeout, Action<MigrationState>? onProgress, Action? check, CancellationToken cancellationToken)
    {
        var started = DateTime.UtcNow;
        MigrationState? last = null;
        try
        {
            while (true)
            {
                check?.Invoke();
                await using (var db = DanceMoEDbContext.Create(postgresUrl))
                {
                    last = await db.Migrations.AsNoTracking().Where(m => m.DecisionId == decisionId).OrderBy(m => m.StartedAt)
                        .FirstOrDefaultAsync(cancellationToken).ConfigureAwait(false) ?? last;
                }

                if (last is not null)
                {
                    onProgress?.Invoke(last);
                    if (MigrationStateName.IsFinal(last.CurrentState))
                    {
                        return new MigrationWait(MigrationWaitEnd.Finished, last);
                    }
                }
                else if (DateTime.UtcNow - started > StartTimeout)
                {
                    return new MigrationWait(MigrationWaitEnd.NotStarted, null);
                }

                if (DateTime.UtcNow - started > timeout)
                {
                    return new MigrationWait(MigrationWaitEnd.TimedOut, last);
                }

                await Task.Delay(250, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (NpgsqlException ex)
        {
            throw new OperationException($"cannot read the migrations at {LocalEnvironment.Redact(postgresUrl)}: {ex.Message}", OperationFailure.Unavailable, ex);
        }
    }
}
