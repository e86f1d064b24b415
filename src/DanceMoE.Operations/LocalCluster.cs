using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using DanceMoE.Edge;
using DanceMoE.Hosting;
using DanceMoE.Model;

namespace DanceMoE.Operations;

/// <summary>
/// A local cluster of edge processes on this machine, named edge-1..edge-N, with their pid, ready and log files in the
/// state folder's <c>cluster/</c>: what <c>cluster up|down|status</c>, the demo and the benchmarks start and stop.
/// </summary>
public static class LocalCluster
{
    public static string Directory => Path.Combine(LocalEnvironment.StateDirectory, "cluster");

    /// <summary>Starts the edges of <paramref name="spec"/> and waits until each has written its ready file.</summary>
    public static async Task<IReadOnlyList<StartedEdge>> UpAsync(ClusterSpec spec, Action<string> log, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(log);
        if (spec.MetricsPortBase is { } firstPort && (firstPort < 1024 || firstPort + spec.Edges - 1 > 65535))
        {
            // The option checks its range, but its default comes from DANCEMOE_METRICS_PORT_BASE unchecked.
            throw new InvalidSettingsException(
                $"--metrics-port-base {firstPort} (default $DANCEMOE_METRICS_PORT_BASE, else 9470) gives {spec.Edges} edges ports outside 1024 to 65535");
        }

        if (spec.Threads > CliProcesses.CoresSeen(spec.Edges))
        {
            // An edge refuses more intra-op threads than the cores it sees, and each sees only its share.
            throw new InvalidSettingsException(
                $"--threads {spec.Threads}: each of the {spec.Edges} edges sees {CliProcesses.CoresSeen(spec.Edges)} of this machine's {Environment.ProcessorCount} cores and takes at most that many intra-op threads");
        }

        await using var held = await LockAsync(log, cancellationToken).ConfigureAwait(false);
        var running = RunningEdges();
        if (running.Count > 0)
        {
            throw new OperationException($"a cluster is already running ({string.Join(", ", running.Select(r => $"{r.Id} pid {r.Pid}"))}): ./dancemoe cluster down first");
        }

        System.IO.Directory.CreateDirectory(Directory);
        foreach (var stale in System.IO.Directory.GetFiles(Directory))
        {
            File.Delete(stale);
        }

        if (spec.Traces)
        {
            // The edges write routing traces: the schema must be there before the first request.
            await LocalDatabase.MigrateAsync(LocalEnvironment.PostgresUrl, TimeSpan.FromSeconds(30), cancellationToken).ConfigureAwait(false);
        }

        var model = ModelCatalog.ResolveExported(spec.Model, log);
        var manifest = ModelManifest.Load(model);
        var ids = Enumerable.Range(1, spec.Edges).Select(i => $"edge-{i}").ToList();
        var placementFile = spec.Placement;
        if (placementFile is null or "uniform")
        {
            placementFile = Path.Combine(Directory, "placement.json");
            PlacementFile.Save(placementFile, PlacementFile.Uniform(1, manifest.Architecture.RoutedLayers, manifest.Architecture.NumExperts, ids));
        }

        EdgePlacement placement;
        try
        {
            placement = PlacementFile.Load(placementFile, manifest.Architecture.RoutedLayers, manifest.Architecture.NumExperts);
        }
        catch (PlacementException ex)
        {
            throw new OperationException(ex.Message, OperationFailure.Failed, ex);
        }

        if (spec.MetricsPortBase is { } portBase)
        {
            for (var i = 0; i < ids.Count; i++)
            {
                if (!PortIsFree(portBase + i))
                {
                    throw new OperationException($"metrics port {portBase + i} (for {ids[i]}) is already in use: choose another --metrics-port-base");
                }
            }
        }

        // A cancel during the export starts nothing. The edges run in sessions of their own: an up cancelled or failed
        // after launching some must stop them, or they serve on, named by no command's output, and the next up refuses.
        cancellationToken.ThrowIfCancellationRequested();
        var started = new List<StartedEdge>();
        try
        {
            for (var i = 0; i < ids.Count; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var id = ids[i];
                int? metricsPort = spec.MetricsPortBase is { } b ? b + i : null;
                var memory = spec.MemoryMb.Count == 1 ? spec.MemoryMb[0] : spec.MemoryMb[i];
                var logFile = Path.Combine(Directory, $"{id}.log");
                var ready = ReadyFile(id);
                string[] edgeArgs =
                [
                    "edge", "--id", id, "--model", model, "--memory-mb", memory.ToString(CultureInfo.InvariantCulture),
                    "--placement", placementFile, "--provider", spec.Provider, "--threads", spec.Threads.ToString(CultureInfo.InvariantCulture),
                    "--deadline-ms", spec.DeadlineMs.ToString(CultureInfo.InvariantCulture),
                    "--link-delay-ms", spec.LinkDelayMs.ToString(CultureInfo.InvariantCulture),
                    "--link-mbps", spec.LinkMbps.ToString(CultureInfo.InvariantCulture),
                    "--ready-file", ready, "--trace-spill-dir", Path.Combine(LocalEnvironment.StateDirectory, "trace-spill"),
                    // The edge sees a share of the cores (below); its peers' batches may still overlap as on the whole machine,
                    // unless the operator set the concurrency.
                    .. Environment.GetEnvironmentVariable("Edge__ExpertConcurrency") is null
                        ? ["--expert-concurrency", Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture)]
                        : Array.Empty<string>(),
                    .. spec.Traces ? Array.Empty<string>() : ["--no-traces"],
                    .. metricsPort is { } port ? ["--metrics-port", port.ToString(CultureInfo.InvariantCulture)] : Array.Empty<string>(),
                    .. metricsPort is not null && spec.ExpertMetrics ? ["--expert-metrics"] : Array.Empty<string>(),
                ];
                var pid = Launch(edgeArgs, logFile, CliProcesses.CoreShare(ids.Count));
                File.WriteAllText(PidFile(id), pid.ToString(CultureInfo.InvariantCulture));
                if (metricsPort is { } p)
                {
                    File.WriteAllText(PortFile(id), p.ToString(CultureInfo.InvariantCulture));
                }

                started.Add(new StartedEdge(id, pid, memory, placement.ExpertsOf(id).Count(), logFile, metricsPort));
            }

            log($"started {started.Count} edges; waiting until they serve...");
            var deadline = DateTime.UtcNow.AddSeconds(spec.StartTimeoutSeconds);
            foreach (var edge in started)
            {
                var ready = Path.Combine(Directory, $"{edge.Id}.ready");
                while (!File.Exists(ready))
                {
                    if (!IsAlive(edge.Pid) || DateTime.UtcNow > deadline)
                    {
                        var why = IsAlive(edge.Pid) ? $"not ready after {spec.StartTimeoutSeconds} s" : "exited";
                        var tail = File.Exists(edge.LogFile) ? string.Join(Environment.NewLine, File.ReadLines(edge.LogFile).TakeLast(5)) : "";
                        throw new OperationException($"{edge.Id} {why}; its log ({edge.LogFile}) ends with:{Environment.NewLine}{tail}");
                    }

                    await Task.Delay(100, cancellationToken).ConfigureAwait(false);
                }
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or OperationException or IOException)
        {
            await StopAsync(CancellationToken.None).ConfigureAwait(false);
            throw;
        }

        return started;
    }

    /// <summary>
    /// Stops exactly the edges this folder's pid files name: SIGTERM, then SIGKILL after 20 s. <paramref name="log"/>, when
    /// given, hears that it waits for another <c>cluster up</c> or <c>down</c>.
    /// </summary>
    public static async Task<IReadOnlyList<string>> DownAsync(CancellationToken cancellationToken, Action<string>? log = null)
    {
        await using var held = await LockAsync(log, cancellationToken).ConfigureAwait(false);
        return await StopAsync(cancellationToken).ConfigureAwait(false);
    }

    private static async Task<IReadOnlyList<string>> StopAsync(CancellationToken cancellationToken)
    {
        var stopped = new List<string>();
        if (!System.IO.Directory.Exists(Directory))
        {
            return stopped;
        }

        var edges = System.IO.Directory.GetFiles(Directory, "*.pid")
            .Select(f => (Id: Path.GetFileNameWithoutExtension(f), Pid: ReadPid(f), File: f))
            .ToList();
        var ours = edges.Where(e => e.Pid is not null && IsEdgeProcess(e.Id, e.Pid.Value)).Select(e => e.Pid!.Value).ToHashSet();
        foreach (var pid in ours)
        {
            Signal("TERM", pid);
        }

        var deadline = DateTime.UtcNow.AddSeconds(20);
        foreach (var edge in edges)
        {
            if (edge.Pid is { } pid)
            {
                while (ours.Contains(pid) && IsAlive(pid) && DateTime.UtcNow < deadline)
                {
                    await Task.Delay(100, cancellationToken).ConfigureAwait(false);
                }

                if (ours.Contains(pid) && IsEdgeProcess(edge.Id, pid))
                {
                    Signal("KILL", pid);
                }

                stopped.Add(edge.Id);
            }

            File.Delete(edge.File);
            File.Delete(Path.Combine(Directory, $"{edge.Id}.ready"));
            File.Delete(PortFile(edge.Id));
        }

        return stopped;
    }

    /// <summary>The edges whose pid files name a live process, by id.</summary>
    public static IReadOnlyList<(string Id, int Pid)> RunningEdges() =>
        !System.IO.Directory.Exists(Directory)
            ? []
            : [.. System.IO.Directory.GetFiles(Directory, "*.pid")
                .Select(f => (Id: Path.GetFileNameWithoutExtension(f), Pid: ReadPid(f)))
                .Where(e => e.Pid is not null && IsEdgeProcess(e.Id, e.Pid.Value))
                .Select(e => (e.Id, e.Pid!.Value))
                .OrderBy(e => e.Id, StringComparer.Ordinal)];

    /// <summary>
    /// Every edge a pid file names, by id, with the metrics port it was started with (none: started without one); an edge
    /// whose process died (SIGKILL, a crash) keeps its pid file until <c>cluster down</c>, and is listed as not alive.
    /// </summary>
    public static IReadOnlyList<LocalEdge> EdgesWithPorts() =>
        !System.IO.Directory.Exists(Directory)
            ? []
            : [.. System.IO.Directory.GetFiles(Directory, "*.pid")
                .Select(f => (Id: Path.GetFileNameWithoutExtension(f), Pid: ReadPid(f)))
                .Where(e => e.Pid is not null)
                .OrderBy(e => e.Id, StringComparer.Ordinal)
                .Select(e => new LocalEdge(e.Id, e.Pid!.Value, File.Exists(PortFile(e.Id)) ? ReadPid(PortFile(e.Id)) : null, IsEdgeProcess(e.Id, e.Pid.Value)))];

    /// <summary>Sends a signal (<c>TERM</c>, <c>KILL</c>) to a process by pid, as <c>kill</c> does.</summary>
    public static void Signal(string signal, int pid)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill", ["-" + signal, pid.ToString(CultureInfo.InvariantCulture)]) { UseShellExecute = false });
        kill?.WaitForExit();
    }

    /// <summary>
    /// One <c>cluster up</c> or <c>down</c> at a time per state folder (an advisory lock the kernel drops when its process
    /// dies): two at once would each find no edge running, and the second would delete the first's pid files and leave
    /// its edges running unnamed.
    /// </summary>
    private static async Task<FileStream> LockAsync(Action<string>? log, CancellationToken cancellationToken)
    {
        const int WouldBlock = 11;
        System.IO.Directory.CreateDirectory(LocalEnvironment.StateDirectory);
        var path = Path.Combine(LocalEnvironment.StateDirectory, "cluster.lock");
        var told = false;
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException ex) when (ex.HResult == WouldBlock)
            {
                if (!told)
                {
                    log?.Invoke("waiting for another cluster up or down on this machine to finish...");
                    told = true;
                }

                await Task.Delay(100, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private static string PidFile(string id) => Path.Combine(Directory, $"{id}.pid");

    private static string ReadyFile(string id) => Path.Combine(Directory, $"{id}.ready");

    /// <summary>
    /// Whether <paramref name="pid"/> runs the edge <paramref name="id"/> of this folder: alive, and its command line names
    /// the edge's ready file here. A pid file outlives an edge that was killed or crashed, and the kernel hands its number
    /// to some other process, which <c>down</c> must not signal and <c>up</c> must not take for a running edge.
    /// </summary>
    public static bool IsEdgeProcess(string id, int pid)
    {
        if (!IsAlive(pid))
        {
            return false;
        }

        try
        {
            var arguments = File.ReadAllText($"/proc/{pid}/cmdline").Split('\0');
            var at = Array.IndexOf(arguments, "--ready-file");
            var workingDirectory = new FileInfo($"/proc/{pid}/cwd").LinkTarget;
            return at >= 0 && at + 1 < arguments.Length && workingDirectory is not null
                && Path.GetFullPath(arguments[at + 1], workingDirectory) == Path.GetFullPath(ReadyFile(id));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static string PortFile(string id) => Path.Combine(Directory, $"{id}.metrics-port");

    /// <summary>Whether a listener may bind this port on 127.0.0.1 now.</summary>
    public static bool PortIsFree(int port)
    {
        try
        {
            using var probe = new TcpListener(IPAddress.Loopback, port);
            probe.Start();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    /// <summary>Starts the edge in its own session so it outlives this command; returns its pid.</summary>
    private static int Launch(string[] edgeArgs, string logFile, int cores)
    {
        var start = CliProcesses.StartInfo(edgeArgs, logFile, detached: true, serving: true, role: BusRole.Edge, cores: cores);
        using var shell = Process.Start(start) ?? throw new OperationException("cannot start /bin/sh");
        var output = shell.StandardOutput.ReadToEnd();
        shell.WaitForExit();
        return int.TryParse(output.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var pid)
            ? pid
            : throw new OperationException($"cannot start an edge process: {output}");
    }

    /// <summary>
    /// The pid a file names; none when it names no process (garbage, a negative number) or is no regular file: a FIFO
    /// would block the read until a writer came, and a link to /dev/zero would never end.
    /// </summary>
    private static int? ReadPid(string file)
    {
        try
        {
            var text = ModelFiles.ReadText(file, MaxPidFileBytes, "a pid file").Trim();
            return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var pid) && pid > 0 ? pid : null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ModelFormatException)
        {
            return null;
        }
    }

    private const int MaxPidFileBytes = 64;

    /// <summary>Whether the process runs: it exists and is not a zombie.</summary>
    public static bool IsAlive(int pid)
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
}

/// <summary>One edge <see cref="LocalCluster.UpAsync"/> started.</summary>
public sealed record StartedEdge(string Id, int Pid, int MemoryMb, int Experts, string LogFile, int? MetricsPort = null);

/// <summary>
/// An edge of the local cluster, <see cref="Alive"/> while its process runs; <see cref="MetricsPort"/> serves /metrics,
/// /healthz, /readyz on 127.0.0.1.
/// </summary>
public sealed record LocalEdge(string Id, int Pid, int? MetricsPort, bool Alive = true)
{
    public string? MetricsUrl => MetricsPort is { } p ? FormattableString.Invariant($"http://127.0.0.1:{p}/metrics") : null;

    public string? ReadyUrl => MetricsPort is { } p ? FormattableString.Invariant($"http://127.0.0.1:{p}/readyz") : null;

    public string State => Alive ? "running" : "down";

    /// <summary>The line of <c>cluster status</c>.</summary>
    public string ToText() => Alive
        ? FormattableString.Invariant($"{Id} pid {Pid} running")
        : FormattableString.Invariant($"{Id} pid {Pid} down (the process has exited; ./dancemoe cluster down clears it)");

    /// <summary>The object of <c>cluster status --json</c>.</summary>
    public Dictionary<string, object?> ToJson() => new()
    {
        ["id"] = Id,
        ["pid"] = Pid,
        ["state"] = State,
        ["metrics_url"] = MetricsUrl,
        ["ready_url"] = ReadyUrl,
    };
}

/// <summary>What <see cref="LocalCluster.UpAsync"/> starts.</summary>
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

    /// <summary>edge-i serves its metrics on this port + i - 1 (127.0.0.1); none: no metrics listener.</summary>
    public int? MetricsPortBase { get; init; }

    /// <summary>With a metrics port: per-expert activation counters (the dashboard's hot/cold heatmap).</summary>
    public bool ExpertMetrics { get; init; } = true;
}
