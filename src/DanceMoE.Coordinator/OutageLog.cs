using System.Data.Common;
using Microsoft.Extensions.Logging;

namespace DanceMoE.Coordinator;

/// <summary>
/// Failures of work that runs again anyway (each heartbeat, the saga's timeout scan) logged once when they start and once
/// when they end, not at every try: while PostgreSQL is down that work fails several times a second. A singleton per
/// kind of work; <typeparamref name="T"/> names the work's log category.
/// </summary>
public sealed class OutageLog<T>(ILogger<T> logger)
{
    private int _failures;

    public void Failed(string work, Exception exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        if (Interlocked.Increment(ref _failures) == 1)
        {
            logger.LogWarning("{Work} failed: {Reason}; retrying quietly until it works", work, exception.GetBaseException().Message);
        }
    }

    public void Succeeded(string work)
    {
        if (Interlocked.Exchange(ref _failures, 0) is var failures and > 0)
        {
            logger.LogInformation("{Work} works again after {Failures} failures", work, failures);
        }
    }
}

public static class OutageLog
{
    /// <summary>Whether <paramref name="exception"/> is the database failing (EF Core wraps it in its own exceptions).</summary>
    public static bool IsDatabaseFailure(Exception exception)
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (e is DbException)
            {
                return true;
            }
        }

        return false;
    }
}
