using System.Diagnostics;
using System.Globalization;
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
    /// Socket completions run on the thread that polls the sockets instead of being handed to a pool worker: one thread
    /// wake-up less per message received, which this machine's guest kernel charges dearly. In alternated runs (six
    /// without, ten with; <c>bench load --edges 3 --concurrency 1,16 --requests-per-level 120</c>) the median tokens/s at 16
    /// went from 586 to 662 and the edges' median CPU per token at 16 from 1.84 to 1.66 ms; at 1 the runs overlapped.
    /// </summary>
    public static IReadOnlyDictionary<string, string> ServingEnvironment { get; } = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["DOTNET_TieredCompilation"] = "0",
        ["DOTNET_ThreadPool_UnfairSemaphoreSpinLimit"] = "0",
        ["DOTNET_ReadyToRun"] = "0",
        ["DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS"] = "1",
    };

    /// <summary>
    /// The cores each of <paramref name="processes"/> serving processes on this machine is told it has: its share, at
    /// least one. The runtime sizes its thread pool and spinning, and an edge its expert concurrency, by the cores it sees;
    /// three edges on two cores that each see both keep more threads runnable than there are cores, and pay in context
    /// switches. On this 2-core machine three edges told one core each, against each seeing both (<c>./dancemoe bench load
    /// --edges 3 --concurrency 1,16</c>, alternated runs): tokens/s 112-123 to 129-156 at 1 and 527-614 to 575-718 at 16,
    /// the edges' CPU per token at 16 1.92-2.21 to 1.51-1.95 ms. The local cluster keeps the edges' expert concurrency at
    /// the machine's cores: at one, a peer's batches waited behind each other's emulated link time.
    /// </summary>
    public static int CoreShare(int processes) => Math.Max(1, Environment.ProcessorCount / Math.Max(1, processes));

    /// <summary>The cores each of <paramref name="processes"/> started with their <see cref="CoreShare"/> sees: that share, unless the operator set <c>DOTNET_PROCESSOR_COUNT</c>, which wins.</summary>
    public static int CoresSeen(int processes) => Environment.GetEnvironmentVariable(ProcessorCountVariable) is null ? CoreShare(processes) : Environment.ProcessorCount;

    /// <summary>
    /// A <c>/bin/sh</c> that runs the CLI with its output to <paramref name="logFile"/> and no standard input. A detached
    /// process gets its own session, so it outlives the command that started it, and the shell prints its pid. A
    /// <paramref name="serving"/> process gets <see cref="ServingEnvironment"/> where this process does not set them. A
    /// process of a <paramref name="role"/> connects to RabbitMQ as that role's user (<see cref="WithBusRole"/>). A process
    /// given <paramref name="cores"/> sees that many (<c>DOTNET_PROCESSOR_COUNT</c>, <see cref="CoreShare"/>).
    /// </summary>
    public static ProcessStartInfo StartInfo(IEnumerable<string> arguments, string logFile, bool detached, bool serving = false, BusRole? role = null, int? cores = null)
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

        if (cores is { } n && Environment.GetEnvironmentVariable(ProcessorCountVariable) is null)
        {
            start.Environment[ProcessorCountVariable] = n.ToString(CultureInfo.InvariantCulture);
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

    private const string ProcessorCountVariable = "DOTNET_PROCESSOR_COUNT";
}
