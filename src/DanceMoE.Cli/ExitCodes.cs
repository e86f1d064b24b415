namespace DanceMoE.Cli;

/// <summary>The exit codes of every verb.</summary>
public static class ExitCodes
{
    public const int Ok = 0;
    public const int Failed = 1;
    public const int Usage = 2;
    public const int Unavailable = 3;
    public const int Cancelled = 130;
}

/// <summary>A failure to report as one clear line and an exit code, without a stack trace.</summary>
public class CliException(string message, int exitCode = ExitCodes.Failed, Exception? inner = null)
    : Exception(message, inner)
{
    public int ExitCode { get; } = exitCode;
}

/// <summary>The command line itself is wrong: printed as one line that points at the verb's --help, exit code 2.</summary>
public sealed class UsageException(string message) : CliException(message, ExitCodes.Usage);
