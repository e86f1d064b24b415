using System.Diagnostics;
using System.Globalization;
using DanceMoE.Edge;
using DanceMoE.Model;

namespace DanceMoE.Cli.Commands;

/// <summary>
/// <c>dancemoe cluster up|down|status</c>: a local cluster of edge processes on this machine, named
/// edge-1..edge-N, with their pid, ready and log files in the state folder's <c>cluster/</c>.
/// </summary>
public sealed class ClusterCommand : ICliCommand
{
    public string Verb => "cluster";

    public string Usage =>
        "cluster up --edges N [--model DIR] [--placement uniform|FILE] [--memory-mb A,B,C] [--link-delay-ms D] [--link-mbps B] [--threads 1] [--deadline-ms 5000] [--no-traces] | cluster down | cluster status";

    public static string ClusterDirectory => Path.Combine(ModelCatalog.StateDirectory, "cluster");

    public async Task<int> RunAsync(Arguments args, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        var sub = args.Positional0("sub-command (up, down or status)");
        switch (sub)
        {
            case "up":
                var spec = ClusterSpec.Read(args);
                args.EnsureAllUsed(1);
                var edges = await UpAsync(spec, Console.Error.WriteLine, cancellationToken).ConfigureAwait(false);
                foreach (var e in edges)
                {
                    Console.WriteLine($"{e.Id} pid {e.Pid}: {e.Experts} experts, budget {e.MemoryMb} MiB, log {e.LogFile}");
                }

                return ExitCodes.Ok;
            case "down":
                args.EnsureAllUsed(1);
                var stopped = await DownAsync(cancellationToken).ConfigureAwait(false);
                Console.WriteLine(stopped.Count == 0 ? "no edge was running" : $"stopped {string.Join(", ", stopped)}");
                return ExitCodes.Ok;
            case "status":
                args.EnsureAllUsed(1);
                foreach (var (id, pid) in RunningEdges())
                {
                    Console.WriteLine($"{id} pid {pid} running");
                }

                return ExitCodes.Ok;
            default:
                throw new UsageException($"unknown sub-command '{sub}'");
        }
    }

    public static async Task<IReadOnlyList<StartedEdge>> UpAsync(ClusterSpec spec, Action<string> log, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(log);
        var running = RunningEdges();
        if (running.Count > 0)
        {
            throw new CliException($"a cluster is already running ({string.Join(", ", running.Select(r => $"{r.Id} pid {r.Pid}"))}): ./dancemoe cluster down first");
        }

        Directory.CreateDirectory(ClusterDirectory);
        foreach (var stale in Directory.GetFiles(ClusterDirectory))
        {
            File.Delete(stale);
        }

        if (spec.Traces)
        {
            // The edges write routing traces: the schema must be there before the first request.
            await DbCommand.MigrateAsync(CliEnvironment.PostgresUrl, TimeSpan.FromSeconds(30), cancellationToken).ConfigureAwait(false);
        }

        var model = ModelCatalog.ResolveExported(spec.Model, log);
        var manifest = ModelManifest.Load(model);
        var ids = Enumerable.Range(1, spec.Edges).Select(i => $"edge-{i}").ToList();
        var placementFile = spec.Placement;
        if (placementFile is null or "uniform")
        {
            placementFile = Path.Combine(ClusterDirectory, "placement.json");
            PlacementFile.Save(placementFile, PlacementFile.Uniform(1, manifest.Architecture.NumLayers, manifest.Architecture.NumExperts, ids));
        }

        EdgePlacement placement;
        try
        {
            placement = PlacementFile.Load(placementFile);
            placement.Validate(manifest.Architecture.NumLayers, manifest.Architecture.NumExperts);
        }
        catch (PlacementException ex)
        {
            throw new CliException(ex.Message, ExitCodes.Failed, ex);
        }

        var dll = typeof(ClusterCommand).Assembly.Location;
        var started = new List<StartedEdge>();
        for (var i = 0; i < ids.Count; i++)
        {
            var id = ids[i];
            var memory = spec.MemoryMb.Count == 1 ? spec.MemoryMb[0] : spec.MemoryMb[i];
            var logFile = Path.Combine(ClusterDirectory, $"{id}.log");
            var ready = Path.Combine(ClusterDirectory, $"{id}.ready");
            string[] edgeArgs =
            [
                "edge", "--id", id, "--model", model, "--memory-mb", memory.ToString(CultureInfo.InvariantCulture),
                "--placement", placementFile, "--provider", spec.Provider, "--threads", spec.Threads.ToString(CultureInfo.InvariantCulture),
                "--deadline-ms", spec.DeadlineMs.ToString(CultureInfo.InvariantCulture),
                "--link-delay-ms", spec.LinkDelayMs.ToString(CultureInfo.InvariantCulture),
                "--link-mbps", spec.LinkMbps.ToString(CultureInfo.InvariantCulture),
                "--ready-file", ready, "--trace-spill-dir", Path.Combine(ModelCatalog.StateDirectory, "trace-spill"),
                .. spec.Traces ? Array.Empty<string>() : ["--no-traces"],
            ];
            var pid = Launch(dll, edgeArgs, logFile);
            File.WriteAllText(PidFile(id), pid.ToString(CultureInfo.InvariantCulture));
            started.Add(new StartedEdge(id, pid, memory, placement.ExpertsOf(id).Count(), logFile));
        }

        log($"started {started.Count} edges; waiting until they serve...");
        var deadline = DateTime.UtcNow.AddSeconds(spec.StartTimeoutSeconds);
        foreach (var edge in started)
        {
            var ready = Path.Combine(ClusterDirectory, $"{edge.Id}.ready");
            while (!File.Exists(ready))
            {
                if (!IsAlive(edge.Pid) || DateTime.UtcNow > deadline)
                {
                    var why = IsAlive(edge.Pid) ? $"not ready after {spec.StartTimeoutSeconds} s" : "exited";
                    var tail = File.Exists(edge.LogFile) ? string.Join(Environment.NewLine, File.ReadLines(edge.LogFile).TakeLast(5)) : "";
                    await DownAsync(CancellationToken.None).ConfigureAwait(false);
                    throw new CliException($"{edge.Id} {why}; its log ({edge.LogFile}) ends with:{Environment.NewLine}{tail}");
                }

                await Task.Delay(100, cancellationToken).ConfigureAwait(false);
            }
        }

        return started;
    }

    /// <summary>Stops exactly the edges this folder's pid files name: SIGTERM, then SIGKILL after 20 s.</summary>
    public static async Task<IReadOnlyList<string>> DownAsync(CancellationToken cancellationToken)
    {
        var stopped = new List<string>();
        if (!Directory.Exists(ClusterDirectory))
        {
            return stopped;
        }

        var edges = Directory.GetFiles(ClusterDirectory, "*.pid")
            .Select(f => (Id: Path.GetFileNameWithoutExtension(f), Pid: ReadPid(f), File: f))
            .ToList();
        foreach (var edge in edges.Where(e => e.Pid is not null && IsAlive(e.Pid.Value)))
        {
            Signal("TERM", edge.Pid!.Value);
        }

        var deadline = DateTime.UtcNow.AddSeconds(20);
        foreach (var edge in edges)
        {
            if (edge.Pid is { } pid)
            {
                while (IsAlive(pid) && DateTime.UtcNow < deadline)
                {
                    await Task.Delay(100, cancellationToken).ConfigureAwait(false);
                }

                if (IsAlive(pid))
                {
                    Signal("KILL", pid);
                }

                stopped.Add(edge.Id);
            }

            File.Delete(edge.File);
            File.Delete(Path.Combine(ClusterDirectory, $"{edge.Id}.ready"));
        }

        return stopped;
    }

    public static IReadOnlyList<(string Id, int Pid)> RunningEdges() =>
        !Directory.Exists(ClusterDirectory)
            ? []
            : [.. Directory.GetFiles(ClusterDirectory, "*.pid")
                .Select(f => (Id: Path.GetFileNameWithoutExtension(f), Pid: ReadPid(f)))
                .Where(e => e.Pid is not null && IsAlive(e.Pid.Value))
                .Select(e => (e.Id, e.Pid!.Value))
                .OrderBy(e => e.Id, StringComparer.Ordinal)];

    private static string PidFile(string id) => Path.Combine(ClusterDirectory, $"{id}.pid");

    /// <summary>Starts the edge in its own session so it outlives this command; returns its pid.</summary>
    private static int Launch(string dll, string[] edgeArgs, string logFile)
    {
        var start = new ProcessStartInfo("/bin/sh") { RedirectStandardOutput = true, UseShellExecute = false };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add("log=$1; shift; setsid \"$@\" >\"$log\" 2>&1 </dev/null & echo $!");
        start.ArgumentList.Add("sh");
        start.ArgumentList.Add(logFile);
        start.ArgumentList.Add("dotnet");
        start.ArgumentList.Add(dll);
        foreach (var a in edgeArgs)
        {
            start.ArgumentList.Add(a);
        }

        using var shell = Process.Start(start) ?? throw new CliException("cannot start /bin/sh");
        var output = shell.StandardOutput.ReadToEnd();
        shell.WaitForExit();
        return int.TryParse(output.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var pid)
            ? pid
            : throw new CliException($"cannot start an edge process: {output}");
    }

    private static int? ReadPid(string file) =>
        int.TryParse(File.ReadAllText(file).Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var pid) ? pid : null;

    private static bool IsAlive(int pid)
    {
        // A zombie has exited: /proc/PID/stat's third field is Z.
        var stat = $"/proc/{pid}/stat";
        if (!File.Exists(stat))
        {
            return false;
        }

        try
        {
            var text = File.ReadAllText(stat);
            var state = text[(text.LastIndexOf(')') + 2)..].Split(' ', 2)[0];
            return state != "Z" && state != "X";
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>Sends a signal (<c>TERM</c>, <c>KILL</c>) to a process by pid, as <c>kill</c> does.</summary>
    internal static void Signal(string signal, int pid)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill", ["-" + signal, pid.ToString(CultureInfo.InvariantCulture)]) { UseShellExecute = false });
        kill?.WaitForExit();
    }
}

public sealed record StartedEdge(string Id, int Pid, int MemoryMb, int Experts, string LogFile);

/// <summary>What <c>cluster up</c> starts, from its command line.</summary>
public sealed record ClusterSpec
{
    public int Edges { get; init; } = 3;
    public string? Model { get; init; }
    public string? Placement { get; init; }
    public IReadOnlyList<int> MemoryMb { get; init; } = [1024];
    public string Provider { get; init; } = "auto";
    public int Threads { get; init; } = 1;
    public int DeadlineMs { get; init; } = 5000;
    public double LinkDelayMs { get; init; }
    public double LinkMbps { get; init; }
    public int StartTimeoutSeconds { get; init; } = 120;
    public bool Traces { get; init; } = true;

    public static ClusterSpec Read(Arguments args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var edges = args.Int("edges", 3, 1, 64);
        var memory = (args.Option("memory-mb") ?? "1024").Split(',')
            .Select(m => int.TryParse(m, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v > 0
                ? v
                : throw new UsageException($"--memory-mb takes positive numbers separated by commas (got '{m}')"))
            .ToList();
        if (memory.Count != 1 && memory.Count != edges)
        {
            throw new UsageException($"--memory-mb has {memory.Count} values for {edges} edges: give one for all, or one per edge");
        }

        return new ClusterSpec
        {
            Edges = edges,
            Model = args.Option("model"),
            Placement = args.Option("placement"),
            MemoryMb = memory,
            Provider = args.Option("provider") ?? "auto",
            Threads = args.Int("threads", 1, 0, 64),
            DeadlineMs = args.Int("deadline-ms", 5000, 50, 600_000),
            LinkDelayMs = args.Double("link-delay-ms", 0, 0, 10_000),
            LinkMbps = args.Double("link-mbps", 0, 0, 1_000_000),
            StartTimeoutSeconds = args.Int("start-timeout-seconds", 120, 1, 3600),
            Traces = !args.Flag("no-traces"),
        };
    }
}
