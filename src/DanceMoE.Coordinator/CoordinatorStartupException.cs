namespace DanceMoE.Coordinator;

/// <summary>The coordinator cannot start; the message says why in one line, <see cref="Failure"/> which exit code it takes.</summary>
public sealed class CoordinatorStartupException(string message, CoordinatorStartupFailure failure, Exception inner) : Exception(message, inner)
{
    public CoordinatorStartupFailure Failure { get; } = failure;
}

/// <summary>Why the coordinator did not start, which decides its exit code.</summary>
public enum CoordinatorStartupFailure
{
    /// <summary>Its database has no schema, or its metrics port cannot be listened on.</summary>
    CannotServe,

    /// <summary>A setting is out of range or not of its type; the message names its key.</summary>
    InvalidOption,

    /// <summary>The broker or the database answered and refused its login or the database named: a setting to fix, not worth retrying.</summary>
    Refused,

    /// <summary>The coordinator itself is fine but the broker cannot be reached (worth retrying later).</summary>
    BrokerUnreachable,
}
