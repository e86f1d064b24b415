using System.Diagnostics;

namespace DanceMoE.Operations;

/// <summary>How the local launchers start <c>dotnet dancemoe.dll ARGS</c> (an edge, a coordinator) as a child process.</summary>
public static class CliProcesses
{
    /// <summary>
    /// A <c>/bin/sh</c> that runs the CLI with its output to <paramref name="logFile"/> and no standard input. A detached
    /// process gets its own session, so it outlives the command that started it, and the shell prints its pid.
    /// </summary>
    public static ProcessStartInfo StartInfo(IEnumerable<string> arguments, string logFile, bool detached)
    {
        ArgumentNullException.ThrowIfNull(arguments);
        var start = new ProcessStartInfo("/bin/sh") { UseShellExecute = false, RedirectStandardOutput = detached };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(detached
            ? "log=$1; shift; setsid \"$@\" >\"$log\" 2>&1 </dev/null & echo $!"
            : "log=$1; shift; exec \"$@\" >\"$log\" 2>&1 </dev/null");
        start.ArgumentList.Add("sh");
        start.ArgumentList.Add(logFile);
        start.ArgumentList.Add("dotnet");
        start.ArgumentList.Add(LocalEnvironment.CliAssemblyPath);
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        return start;
    }
}
