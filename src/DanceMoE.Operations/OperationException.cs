using DanceMoE.Hosting;

namespace DanceMoE.Operations;

/// <summary>How an operation failed, for a front end to turn into its own exit code.</summary>
public enum OperationFailure
{
    /// <summary>The operation itself failed.</summary>
    Failed,

    /// <summary>A service it needs (RabbitMQ, PostgreSQL, an edge, the coordinator) is not there or did not answer.</summary>
    Unavailable,

    /// <summary>The settings it was given cannot work (the CLI's usage exit code).</summary>
    InvalidSettings,
}

/// <summary>A failure to report as one clear line, without a stack trace.</summary>
public class OperationException(string message, OperationFailure failure = OperationFailure.Failed, Exception? inner = null)
    : Exception(message, inner)
{
    public OperationFailure Failure { get; } = failure;

    /// <summary>
    /// "<paramref name="what"/>: ..." for a broker or database that failed: a refused login or database names the setting to
    /// check (<paramref name="setting"/>, else the usual connection string), anything else asks whether the service is up.
    /// </summary>
    public static OperationException ServiceFailure(string what, Exception ex, string? setting = null) => ServiceRefusal.Describe(ex, setting) is { } refused
        ? new($"{what}: {refused}", OperationFailure.InvalidSettings, ex)
        : new($"{what}: {ex.Message} (is it up? ./dancemoe services up)", OperationFailure.Unavailable, ex);
}

/// <summary>An option of the operation is wrong: a front end shows its usage after the message.</summary>
public sealed class InvalidSettingsException(string message, Exception? inner = null) : OperationException(message, OperationFailure.InvalidSettings, inner);
