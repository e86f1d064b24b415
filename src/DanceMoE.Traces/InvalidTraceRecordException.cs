namespace DanceMoE.Traces;

/// <summary>A routing record or request summary that the trace writer refuses: it says which record and why.</summary>
public sealed class InvalidTraceRecordException : ArgumentException
{
    public InvalidTraceRecordException()
    {
    }

    public InvalidTraceRecordException(string message)
        : base(message)
    {
    }

    public InvalidTraceRecordException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
