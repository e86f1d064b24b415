namespace DanceMoE.Hosting;

/// <summary>An edge or the coordinator cannot start; the message says why in one line, <see cref="ExitCode"/> how its process ends.</summary>
public sealed class HostStartupException(string message, HostStartupFailure failure, Exception inner) : Exception(message, inner)
{
    public HostStartupFailure Failure { get; } = failure;

    /// <summary>2 for a setting to fix (invalid, or a login refused), 3 for a broker that cannot be reached, 1 for anything else.</summary>
    public int ExitCode => Failure switch
    {
        HostStartupFailure.InvalidOption or HostStartupFailure.Refused => 2,
        HostStartupFailure.BrokerUnreachable => 3,
        _ => 1,
    };
}

/// <summary>Why a host did not start, which decides its exit code.</summary>
public enum HostStartupFailure
{
    /// <summary>Its model, placement, expert budget, database schema or metrics port does not allow it to serve.</summary>
    CannotServe,

    /// <summary>A setting is out of range or not of its type; the message names its key.</summary>
    InvalidOption,

    /// <summary>The broker or the database answered and refused its login or the database named: a setting to fix, not worth retrying.</summary>
    Refused,

    /// <summary>The host itself is fine but the broker cannot be reached (worth retrying later).</summary>
    BrokerUnreachable,
}
