using System.Diagnostics;
using DanceMoE.Hosting;

namespace DanceMoE.Operations;

/// <summary>How the local launchers start <c>dotnet dancemoe.dll ARGS</c> (an edge, a coordinator) as a child process.</summary>
public static class CliProcesses
{
    /// <summary>
    /// The runtime settings of a serving process (an edge; the dancemoe-edge host has the first two in its runtimeconfig):
    /// code compiled optimised once at first call instead of re-compiled by tiers on a background thread for minutes under
    /// load, and thread-pool workers that block rather than spin when idle. On this 2-core machine together they took
    /// three edges from 208 to 555 tokens/s at 16 concurrent requests (<c>./dancemoe bench load --concurrency 1,16</c>).
    /// Without tiers the framework's precompiled (ReadyToRun) code would serve for good, and it calls through stubs and
    /// shared generic dictionaries at every step of the bus's pipelines: compiling it too at first call took the edges'
    /// CPU per generated token at 16 concurrent requests from 3.35-3.58 to 2.85-2.86 ms (<c>bench load</c>'s cpu columns).
    /// </summary>
    public static IReadOnlyDictionary<string, string> ServingEnvironment { get; } = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["DOTNET_TieredCompilation"] = "0",
        ["DOTNET_ThreadPool_UnfairSemaphoreSpinLimit"] = "0",
        ["DOTNET_ReadyToRun"] = "0",
    };

    /// <summary>
    /// A <c>/bin/sh</c> that runs the CLI with its output to <paramref name="logFile"/> and no standard input. A detached
    /// process gets its own session, so it outlives the command that started it, and the shell prints its pid. A
    /// <paramref name="serving"/> process gets <see cref="ServingEnvironment"/> where this process does not set them. A
    /// process of a <paramref name="role"/> connects to RabbitMQ as that role's user (<see cref="WithBusRole"/>).
    /// </summary>
    public static ProcessStartInfo StartInfo(IEnumerable<string> arguments, string logFile, bool detached, bool serving = false, BusRole? role = null)
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

        if (serving)
        {
            // A setting the operator gave this command (for example DOTNET_TieredCompilation=1 to compare) wins.
            foreach (var (name, value) in ServingEnvironment.Where(kv => Environment.GetEnvironmentVariable(kv.Key) is null))
            {
                start.Environment[name] = value;
            }
        }

        if (role is { } r)
        {
            WithBusRole(start, r);
        }

        return start;
    }

    /// <summary>
    /// The process connects as <paramref name="role"/>'s user (<see cref="LocalEnvironment.RabbitMqUriFor"/>) and to this
    /// process's database; an edge also learns the coordinator's user, the only one it takes control messages from, unless
    /// the operator set <c>Edge__CoordinatorUser</c>.
    /// </summary>
    public static void WithBusRole(ProcessStartInfo start, BusRole role)
    {
        ArgumentNullException.ThrowIfNull(start);
        start.Environment["ConnectionStrings__" + RabbitMqOptions.ConnectionName] = LocalEnvironment.RabbitMqUriFor(role);
        start.Environment["ConnectionStrings__" + DanceMoE.Data.DatabaseOptions.ConnectionName] = LocalEnvironment.PostgresUrl;
        if (role == BusRole.Edge && Environment.GetEnvironmentVariable(CoordinatorUserVariable) is null)
        {
            start.Environment[CoordinatorUserVariable] = RabbitMqOptions.Parse(LocalEnvironment.RabbitMqUriFor(BusRole.Coordinator)).Username;
        }
    }

    private const string CoordinatorUserVariable = "Edge__CoordinatorUser";
}
