using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using DanceMoE.Contracts;
using DanceMoE.Edge;
using DanceMoE.Hosting;
using DanceMoE.Inference;
using DanceMoE.Model;
using DanceMoE.Operations;
using MassTransit;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>
/// <c>dancemoe bench load</c>: a fresh local cluster (uniform placement) under C concurrent clients per level, closed
/// loop or Poisson arrivals; every answer is checked against the monolithic greedy answer of its prompt.
/// </summary>
public static class LoadBenchmark
{
    /// <summary>The default model's domains: man pages in German, English and French, and Python source.</summary>
    internal static readonly string[] Prompts =
    [
        "NAME\n       ls - list directory contents\n\nSYNOPSIS",
        "def parse_args(argv):\n    parser = argparse.",
        "BESCHREIBUNG\n       Dieses Programm",
        "DESCRIPTION\n       La commande",
        "import os, sys\n\n",
        "OPTIONS\n       -h, --help\n              show",
        "Die Datei wird gelesen und",
        "class Config(object):\n    def __init__(self",
        "le fichier de configuration",
        "RETURN VALUE\n       On success,",
        "for line in open(path):\n    ",
        "SIEHE AUCH\n       ",
    ];

    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    private static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(600);

    /// <summary>Runs every level; the report (a table, or JSON) goes to <paramref name="output"/>, progress to <paramref name="log"/>.</summary>
    public static async Task<IReadOnlyList<LoadLevel>> RunAsync(LoadBenchmarkSettings settings, TextWriter output, TextWriter log, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(log);
        if (settings.Concurrency.Count == 0 || settings.Concurrency.Any(c => c < 1))
        {
            throw new InvalidSettingsException("--concurrency takes positive numbers separated by commas");
        }

        if (settings.OnlyEdge is { } only && (only < 1 || only > settings.Edges))
        {
            throw new InvalidSettingsException($"--only-edge {only}: the cluster has edges 1 to {settings.Edges}");
        }

        LabChecks.EnsureNoCluster();
        var exported = ModelCatalog.ResolveExported(settings.Model, log.WriteLine);
        var manifest = ModelManifest.Load(exported);
        // Every request's prompt, and the warm-up's (one request per edge): fewer requests than edges is allowed.
        var prompts = Prompts.Take(Math.Max(settings.Edges, settings.Concurrency.Max(settings.RequestsAt))).ToList();
        log.WriteLine($"bench: the monolithic answers of {prompts.Count} prompts (the oracle)...");
        var oracle = await OracleAsync(manifest, prompts, settings.MaxTokens, InferenceOptions.ParseProvider(settings.Provider), cancellationToken).ConfigureAwait(false);

        log.WriteLine($"bench: {settings.Edges} edges, uniform placement{LinkLabel(settings)}, {TargetLabel(settings)}...");
        var levels = await OnClusterAsync(exported, settings, oracle, settings.Concurrency, log, cancellationToken).ConfigureAwait(false);
        var overhead = settings.MetricsOverhead ? await MetricsOverheadBenchmark.RunAsync(exported, settings, oracle, log, cancellationToken).ConfigureAwait(false) : null;

        if (settings.Json)
        {
            output.WriteLine(overhead is null ? JsonSerializer.Serialize(levels, Json) : JsonSerializer.Serialize(new { levels, metrics_overhead = overhead }, Json));
        }
        else
        {
            WriteTable(output, levels, settings, manifest);
            if (overhead is not null)
            {
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"metrics on vs off at concurrency {overhead.Concurrency}, {overhead.Rounds} rounds of {overhead.RequestsPerLevel} requests on one cluster: "
                    + $"tokens/s on / off median {overhead.Ratio:F3} (quartiles {overhead.RatioP25:F3} to {overhead.RatioP75:F3}; rounds {Joined(overhead.RoundRatios)}); "
                    + $"CPU per token off / on median {overhead.CpuRatio:F3} (quartiles {overhead.CpuRatioP25:F3} to {overhead.CpuRatioP75:F3}; rounds {Joined(overhead.CpuRoundRatios)}); "
                    + $"recording and scraping timed in process: {overhead.RecordingUsPerToken:F2} us per token, {overhead.RecordingShareOfCpu:P2} of the CPU per token"));
            }
        }

        return levels;
    }

    /// <summary>A fresh cluster (no metrics) that runs the given levels.</summary>
    private static async Task<List<LoadLevel>> OnClusterAsync(
        string exported, LoadBenchmarkSettings settings, Dictionary<string, IReadOnlyList<int>> oracle, IEnumerable<int> concurrencies,
        TextWriter log, CancellationToken cancellationToken)
    {
        var levels = new List<LoadLevel>();
        var edges = await LocalCluster.UpAsync(
            new ClusterSpec
            {
                Edges = settings.Edges, Model = exported, Provider = settings.Provider, LinkDelayMs = settings.LinkDelayMs, LinkMbps = settings.LinkMbps,
            },
            log.WriteLine, cancellationToken).ConfigureAwait(false);
        try
        {
            var cpu = new LevelCpu(edges);
            await using var client = await BusClient.StartAsync(LocalEnvironment.RabbitMqUri, cancellationToken).ConfigureAwait(false);
            var target = new LoadTarget(client.Requests, settings, oracle, log);
            log.WriteLine("bench: one warm-up request per edge...");
            await Task.WhenAll(Enumerable.Range(0, settings.Edges).Select(i => target.SendAsync(i, cancellationToken))).ConfigureAwait(false);
            var order = concurrencies.ToList();
            var runs = order.Select(_ => new LevelRuns()).ToList();
            for (var round = 1; round <= settings.Rounds; round++)
            {
                for (var i = 0; i < order.Count; i++)
                {
                    var concurrency = order[i];
                    var requests = settings.RequestsAt(concurrency);
                    var of = settings.Rounds > 1 ? $" (round {round} of {settings.Rounds})" : string.Empty;
                    log.WriteLine(settings.Rate is { } rate
                        ? string.Create(CultureInfo.InvariantCulture, $"bench: {requests} requests arriving at {rate:0.##}/s, at most {concurrency} in flight{of}...")
                        : $"bench: {requests} requests from {concurrency} closed-loop clients{of}...");
                    await runs[i].RunAsync(target, cpu, concurrency, requests, settings, cancellationToken).ConfigureAwait(false);
                }
            }

            levels.AddRange(order.Select((concurrency, i) => runs[i].Level(concurrency, cpu.SeesBroker)));
        }
        finally
        {
            await LocalCluster.DownAsync(CancellationToken.None).ConfigureAwait(false);
        }

        return levels;
    }

    private static async Task<Dictionary<string, IReadOnlyList<int>>> OracleAsync(
        ModelManifest manifest, List<string> prompts, int maxTokens, ExecutionProvider provider, CancellationToken cancellationToken)
    {
        if (manifest.Tokenizer is not { Kind: ByteTokenizer.Kind } info)
        {
            throw new OperationException($"{manifest.Directory}: the model has no byte-level tokenizer; only byte-level tokenizers are supported so far");
        }

        var tokenizer = new ByteTokenizer(info.BosTokenId, info.EosTokenId);
        var longest = prompts.Max(p => tokenizer.Encode(p).Length);
        if (longest + maxTokens > manifest.Architecture.MaxPositions)
        {
            throw new InvalidSettingsException($"a prompt ({longest} tokens) + --max-tokens exceeds the model's {manifest.Architecture.MaxPositions} positions");
        }

        var factory = new SessionFactory(new InferenceOptions { Provider = provider, IntraOpThreads = 1, InterOpThreads = 1 });
        try
        {
            using var pool = new ExpertSessionPool(manifest, factory);
            pool.LoadAll();
            using var forward = new MoeForward(manifest, factory, new LocalExpertDispatcher(pool));
            var answers = new Dictionary<string, IReadOnlyList<int>>(StringComparer.Ordinal);
            foreach (var prompt in prompts)
            {
                var result = await Generator.GenerateAsync(forward, tokenizer, tokenizer.Encode(prompt), maxTokens, new SamplingOptions(), new ForwardContext(), cancellationToken).ConfigureAwait(false);
                answers[prompt] = result.TokenIds;
            }

            return answers;
        }
        catch (Exception ex) when (OnnxRuntimeFailures.Translate(ex) is { } failure)
        {
            throw failure;
        }
    }

    /// <summary>
    /// One level's rounds pooled: its requests, wall time and CPU time summed over the rounds, so a level's figures are
    /// what one level as long as all its rounds would give, while levels taken in turns share the machine's drift.
    /// </summary>
    private sealed class LevelRuns
    {
        private readonly List<RequestSample> _samples = [];
        private readonly List<double> _roundTokensPerS = [];
        private TimeSpan _wall;
        private CpuTimes _cpu;

        public async Task RunAsync(LoadTarget target, LevelCpu cpu, int concurrency, int requests, LoadBenchmarkSettings settings, CancellationToken cancellationToken)
        {
            var before = cpu.Read();
            var (samples, wall) = await RunLevelAsync(target, concurrency, requests, settings, cancellationToken).ConfigureAwait(false);
            _cpu += cpu.Read() - before;
            _samples.AddRange(samples);
            _wall += wall;
            _roundTokensPerS.Add(Math.Round(samples.Where(s => !s.Failed).Sum(s => s.Tokens) / wall.TotalSeconds, 2));
        }

        public LoadLevel Level(int concurrency, bool seesBroker)
        {
            var tokens = Math.Max(1, _samples.Where(s => !s.Failed).Sum(s => s.Tokens));
            return LoadLevel.From(concurrency, _samples, _wall) with
            {
                EdgeCpuMsPerToken = Math.Round(_cpu.Edges.TotalMilliseconds / tokens, 3),
                BrokerCpuMsPerToken = seesBroker ? Math.Round(_cpu.Broker.TotalMilliseconds / tokens, 3) : null,
                ClientCpuMsPerToken = Math.Round(_cpu.Client.TotalMilliseconds / tokens, 3),
                MachineCoresBusy = _cpu.Machine.CoresBusy is { } busy ? Math.Round(busy, 2) : null,
                MachineCores = _cpu.Machine.Cores,
                RoundTokensPerS = [.. _roundTokensPerS],
            };
        }
    }

    /// <summary>One level's answers and its wall time.</summary>
    internal static async Task<(List<RequestSample> Samples, TimeSpan Wall)> RunLevelAsync(
        LoadTarget target, int concurrency, int requests, LoadBenchmarkSettings settings, CancellationToken cancellationToken)
    {
        var samples = new ConcurrentBag<RequestSample>();
        var clock = Stopwatch.StartNew();
        if (settings.Rate is { } rate)
        {
            using var slots = new SemaphoreSlim(concurrency);
            var arrivals = PoissonArrivals(rate, requests, settings.Seed);
            await Task.WhenAll(arrivals.Select(async (arrival, i) =>
            {
                var wait = arrival - clock.Elapsed;
                if (wait > TimeSpan.Zero)
                {
                    await Task.Delay(wait, cancellationToken).ConfigureAwait(false);
                }

                // Latency counts from the arrival, so time spent waiting for a slot is in it.
                await slots.WaitAsync(cancellationToken).ConfigureAwait(false);
                try
                {
                    samples.Add(await target.SendAsync(i, cancellationToken, clock.Elapsed - arrival).ConfigureAwait(false));
                }
                finally
                {
                    slots.Release();
                }
            })).ConfigureAwait(false);
        }
        else
        {
            var next = -1;
            await Task.WhenAll(Enumerable.Range(0, concurrency).Select(async _ =>
            {
                for (var i = Interlocked.Increment(ref next); i < requests; i = Interlocked.Increment(ref next))
                {
                    samples.Add(await target.SendAsync(i, cancellationToken).ConfigureAwait(false));
                }
            })).ConfigureAwait(false);
        }

        return ([.. samples], clock.Elapsed);
    }

    /// <summary>Arrival times of a Poisson process at <paramref name="rate"/> per second, from a fixed seed.</summary>
    internal static List<TimeSpan> PoissonArrivals(double rate, int count, int seed)
    {
        var random = new Random(seed);
        var at = 0.0;
        var arrivals = new List<TimeSpan>(count);
        for (var i = 0; i < count; i++)
        {
            at += -Math.Log(1 - random.NextDouble()) / rate;
            arrivals.Add(TimeSpan.FromSeconds(at));
        }

        return arrivals;
    }

    private static string TargetLabel(LoadBenchmarkSettings settings) =>
        settings.OnlyEdge is { } only ? $"every request to edge-{only}" : $"requests spread over the {settings.Edges} edges";

    private static string RoundsLabel(LoadBenchmarkSettings settings) =>
        settings.Rounds > 1 ? $"; {settings.Rounds} rounds of the levels in turns, each level's rounds pooled" : string.Empty;

    private static string LinkLabel(LoadBenchmarkSettings settings) =>
        settings.LinkDelayMs > 0 || settings.LinkMbps > 0
            ? string.Create(CultureInfo.InvariantCulture, $", link emulation ({settings.LinkDelayMs:0.#} ms one way, {settings.LinkMbps:0.#} Mbit/s)")
            : ", no link emulation";

    private static void WriteTable(TextWriter output, List<LoadLevel> levels, LoadBenchmarkSettings settings, ModelManifest manifest)
    {
        var baseline = levels.FirstOrDefault(l => l.Concurrency == 1) ?? levels[0];
        var arch = manifest.Architecture;
        var clients = settings.Rate is { } rate
            ? string.Create(CultureInfo.InvariantCulture, $"Poisson arrivals at {rate:0.##}/s, concurrency caps requests in flight")
            : "closed-loop clients";
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"model {arch.RoutedLayers} layers x {arch.NumExperts} experts (top-{arch.TopK}); {settings.Edges} edges{(settings.Provider == "cpu" ? string.Empty : " on " + settings.Provider)}{LinkLabel(settings)}; {settings.MaxTokens} tokens per answer; {clients}, {TargetLabel(settings)}{RoundsLabel(settings)}"));
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{"conc",5} {"reqs",5} {"fail",5} {"wrong",5} {"tokens/s",9} {$"vs c={baseline.Concurrency}",8} {"ms/tok p50",11} {"ms/tok p99",11} {$"p99 vs c={baseline.Concurrency}",12} "
            + $"{"req ms p50",11} {"req ms p99",11} {"ttft p50",9} {"ttft p99",9} {"batches/tok",12} {"cpu ms/tok edges",17} {"broker",7} {"client",7} {"cores busy",11}"));
        foreach (var l in levels)
        {
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{l.Concurrency,5} {l.Requests,5} {l.Failed,5} {l.OracleMismatches,5} {l.TokensPerS,9:F1} {Ratio(l.TokensPerS, baseline.TokensPerS),8:F2} "
                + $"{l.PerTokenMsP50,11:F1} {l.PerTokenMsP99,11:F1} {Ratio(l.PerTokenMsP99, baseline.PerTokenMsP99),12:F2} "
                + $"{l.RequestMsP50,11:F0} {l.RequestMsP99,11:F0} {l.TtftMsP50,9:F0} {l.TtftMsP99,9:F0} {l.RemoteBatchesPerToken,12:F1} "
                + $"{l.EdgeCpuMsPerToken,17:F2} {l.BrokerCpuMsPerToken,7:F2} {l.ClientCpuMsPerToken,7:F2} {CoresBusy(l),11}"));
        }

        if (settings.Rounds > 1)
        {
            foreach (var l in levels.Where(l => l != baseline))
            {
                var ratios = l.RoundTokensPerS.Zip(baseline.RoundTokensPerS, (a, b) => a / b).ToList();
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"tokens/s by round at {l.Concurrency}: {string.Join(", ", l.RoundTokensPerS.Select(t => t.ToString("F1", CultureInfo.InvariantCulture)))}; "
                    + $"vs c={baseline.Concurrency} in the same round: {string.Join(", ", ratios.Select(r => r.ToString("F2", CultureInfo.InvariantCulture)))} (median {Stats.Percentile(ratios, 50):F2})"));
            }
        }

        foreach (var l in levels.Where(l => l.RefusedAtCapacity > 0))
        {
            output.WriteLine($"fail at {l.Concurrency} concurrent: {l.RefusedAtCapacity} of {l.Failed} refused at once by an edge at capacity (its --max-active and --max-waiting)");
        }

        output.WriteLine("ms/tok: per request, (latency - time to first token) / (tokens - 1); ttft: the client's latency less the edge's time after its first token");
        output.WriteLine("cpu ms/tok: CPU time per generated token of the edges, the broker (the process on its AMQP port, shared with any other user) and the benchmark's clients");
        output.WriteLine("cores busy: the machine's cores busy on average over the level, whatever ran on them, of all its cores");
    }

    private static string CoresBusy(LoadLevel level) =>
        level.MachineCoresBusy is { } busy ? string.Create(CultureInfo.InvariantCulture, $"{busy:F2} of {level.MachineCores}") : "-";

    private static double? Ratio(double? value, double? baseline) => value / baseline;

    private static string Joined(IEnumerable<double> ratios) => string.Join(", ", ratios.Select(r => r.ToString("F3", CultureInfo.InvariantCulture)));

    /// <summary>The cluster under load: request i goes to <see cref="LoadBenchmarkSettings.EdgeOf"/> with prompt i mod the prompt count.</summary>
    internal sealed class LoadTarget(RequestChannel requests, LoadBenchmarkSettings settings, Dictionary<string, IReadOnlyList<int>> oracle, TextWriter log)
    {
        public async Task<RequestSample> SendAsync(int index, CancellationToken cancellationToken, TimeSpan queued = default)
        {
            var prompt = Prompts[index % Prompts.Length];
            var edge = settings.EdgeOf(index);
            var clock = Stopwatch.StartNew();
            try
            {
                var answer = await EdgeRequests.SendAsync(requests, edge,
                    new GenerateText { RequestId = NewId.NextGuid(), Prompt = prompt, MaxNewTokens = settings.MaxTokens, WorkloadTag = "bench-load" },
                    RequestTimeout, cancellationToken).ConfigureAwait(false);
                var latencyMs = (queued + clock.Elapsed).TotalMilliseconds;
                var afterFirstMs = answer.Stats.LatencyMs - answer.Stats.TtftMs;
                return new RequestSample(
                    Failed: false,
                    Matches: answer.TokenIds.SequenceEqual(oracle[prompt]),
                    Tokens: answer.TokenIds.Count,
                    LatencyMs: latencyMs,
                    TtftMs: latencyMs - afterFirstMs,
                    PerTokenMs: answer.TokenIds.Count > 1 ? afterFirstMs / (answer.TokenIds.Count - 1) : null,
                    RemoteBatches: answer.Stats.RemoteBatchShare) { Edge = edge };
            }
            catch (OperationException ex)
            {
                log.WriteLine($"bench: request {index} failed: {ex.Message}");
                return new RequestSample(Failed: true, Matches: false, Tokens: 0, LatencyMs: 0, TtftMs: 0, PerTokenMs: null, RemoteBatches: 0)
                {
                    Edge = edge,
                    RefusedAtCapacity = ex.InnerException is RequestFaultException { Fault.Exceptions: [{ ExceptionType: var type }, ..] }
                        && type.EndsWith(nameof(EdgeAtCapacityException), StringComparison.Ordinal),
                };
            }
        }
    }
}

/// <summary>
/// CPU time so far (user and system, from /proc) of the cluster's edges, of the broker (the process listening on the
/// broker's AMQP port on this machine; other users of a shared broker count too) and of this process (the clients).
/// </summary>
internal sealed class LevelCpu(IReadOnlyList<StartedEdge> edges)
{
    private readonly int? _brokerPid = ListeningProcess(RabbitMqOptions.Parse(LocalEnvironment.RabbitMqUri).Port);

    public bool SeesBroker => _brokerPid is not null;

    public CpuTimes Read()
    {
        var broker = _brokerPid is { } pid ? TimeOf(() => Process.GetProcessById(pid)) : TimeSpan.Zero;
        return new CpuTimes(EdgesTime(edges), broker, TimeOf(Process.GetCurrentProcess), MachineTicks.Read());
    }

    /// <summary>User and system time so far of every edge process (an exited one counts nothing).</summary>
    public static TimeSpan EdgesTime(IReadOnlyList<StartedEdge> edges)
    {
        var total = TimeSpan.Zero;
        foreach (var edge in edges)
        {
            total += TimeOf(() => Process.GetProcessById(edge.Pid));
        }

        return total;
    }

    /// <summary>The process with a socket listening on TCP <paramref name="port"/> (/proc/net/tcp and each process's fds); null when none is found.</summary>
    private static int? ListeningProcess(int port)
    {
        try
        {
            var suffix = string.Create(CultureInfo.InvariantCulture, $":{port:X4}");
            var inodes = File.ReadLines("/proc/net/tcp").Skip(1)
                .Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                .Where(f => f.Length > 9 && f[3] == "0A" && f[1].EndsWith(suffix, StringComparison.Ordinal))
                .Select(f => $"socket:[{f[9]}]")
                .ToHashSet(StringComparer.Ordinal);
            foreach (var process in System.IO.Directory.EnumerateDirectories("/proc"))
            {
                if (!int.TryParse(Path.GetFileName(process), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
                {
                    continue;
                }

                try
                {
                    if (System.IO.Directory.EnumerateFiles(Path.Combine(process, "fd")).Any(fd => new FileInfo(fd).LinkTarget is { } target && inodes.Contains(target)))
                    {
                        return pid;
                    }
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                }
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
        }

        return null;
    }

    private static TimeSpan TimeOf(Func<Process> open)
    {
        try
        {
            using var process = open();
            return process.TotalProcessorTime;
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException)
        {
            // The process has exited: a failed edge shows in the level's failures, not here.
            return TimeSpan.Zero;
        }
    }
}

internal readonly record struct CpuTimes(TimeSpan Edges, TimeSpan Broker, TimeSpan Client, MachineTicks Machine)
{
    public static CpuTimes operator -(CpuTimes a, CpuTimes b) => new(a.Edges - b.Edges, a.Broker - b.Broker, a.Client - b.Client, a.Machine - b.Machine);

    public static CpuTimes operator +(CpuTimes a, CpuTimes b) => new(a.Edges + b.Edges, a.Broker + b.Broker, a.Client + b.Client, a.Machine + b.Machine);
}

/// <summary>
/// The machine's CPU time so far in clock ticks, busy and in all, over its <paramref name="Cores"/> (/proc/stat: the
/// first line sums every core's, one line per core follows); zero where there is no /proc/stat. Busy over total times
/// the cores is how many cores were busy, whatever ran on them (the runtime's processor count may be set lower).
/// </summary>
internal readonly record struct MachineTicks(long Busy, long Total, int Cores)
{
    public static MachineTicks operator -(MachineTicks a, MachineTicks b) => new(a.Busy - b.Busy, a.Total - b.Total, Math.Max(a.Cores, b.Cores));

    public static MachineTicks operator +(MachineTicks a, MachineTicks b) => new(a.Busy + b.Busy, a.Total + b.Total, Math.Max(a.Cores, b.Cores));

    /// <summary>Cores busy on average over an interval these ticks measured; null when nothing was measured.</summary>
    public double? CoresBusy => Total > 0 && Cores > 0 ? (double)Busy / Total * Cores : null;

    public static MachineTicks Read()
    {
        try
        {
            var lines = File.ReadLines("/proc/stat").Where(l => l.StartsWith("cpu", StringComparison.Ordinal)).ToList();

            // cpu user nice system idle iowait irq softirq steal guest guest_nice: idle and iowait are the idle time, and
            // guest time is already counted in user.
            var fields = lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Take(8)
                .Select(f => long.Parse(f, CultureInfo.InvariantCulture)).ToArray();
            var total = fields.Sum();
            return new MachineTicks(total - fields[3] - fields[4], total, lines.Count - 1);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException or ArgumentOutOfRangeException)
        {
            return default;
        }
    }
}

/// <summary>One answered (or failed) request of a level.</summary>
internal sealed record RequestSample(bool Failed, bool Matches, int Tokens, double LatencyMs, double TtftMs, double? PerTokenMs, double RemoteBatches)
{
    /// <summary>The edge the request was sent to.</summary>
    public string Edge { get; init; } = string.Empty;

    /// <summary>Failed because the edge's waiting queue was full (the edge's fault "edge-1 is at capacity: ...").</summary>
    public bool RefusedAtCapacity { get; init; }
}

/// <summary>What one concurrency level measured; <c>--json</c> prints an array of these.</summary>
public sealed record LoadLevel(
    int Concurrency, int Requests, int Failed, int OracleMismatches, double TokensPerS, double? PerTokenMsP50, double? PerTokenMsP99,
    double? RequestMsP50, double? RequestMsP99, double? TtftMsP50, double? TtftMsP99, double RemoteBatchesPerToken)
{
    /// <summary>CPU milliseconds of every edge process per generated token over the level.</summary>
    public double? EdgeCpuMsPerToken { get; init; }

    /// <summary>CPU milliseconds of the broker (the process on its AMQP port here; null when not found) per generated token.</summary>
    public double? BrokerCpuMsPerToken { get; init; }

    /// <summary>CPU milliseconds of the benchmark's own process (the clients) per generated token.</summary>
    public double? ClientCpuMsPerToken { get; init; }

    /// <summary>
    /// Cores of this machine busy on average over the level, whatever ran on them (the edges, the broker, PostgreSQL, the
    /// clients, anything else); of <see cref="MachineCores"/>. Null where /proc/stat cannot be read.
    /// </summary>
    public double? MachineCoresBusy { get; init; }

    /// <summary>The cores this machine has (/proc/stat; 0 where it cannot be read).</summary>
    public int MachineCores { get; init; }

    /// <summary>Of the failed requests, those an edge refused at once because its waiting queue was full.</summary>
    public int RefusedAtCapacity { get; init; }

    /// <summary>Tokens/s of each of the level's rounds (<c>--rounds</c>), in the order they ran.</summary>
    public IReadOnlyList<double> RoundTokensPerS { get; init; } = [];

    /// <summary>How many of the level's requests each edge was sent (<c>--only-edge</c> sends them all to one).</summary>
    public IReadOnlyDictionary<string, int> RequestsByEdge { get; init; } = new SortedDictionary<string, int>(StringComparer.Ordinal);

    internal static LoadLevel From(int concurrency, List<RequestSample> samples, TimeSpan wall)
    {
        var answered = samples.Where(s => !s.Failed).ToList();
        var tokens = answered.Sum(s => s.Tokens);
        var perToken = answered.Where(s => s.PerTokenMs is not null).Select(s => s.PerTokenMs!.Value).ToList();
        var latency = answered.Select(s => s.LatencyMs).ToList();
        var ttft = answered.Select(s => s.TtftMs).ToList();
        return new LoadLevel(
            concurrency, samples.Count, samples.Count - answered.Count, answered.Count(s => !s.Matches),
            Math.Round(tokens / wall.TotalSeconds, 2),
            Rounded(perToken, 50), Rounded(perToken, 99), Rounded(latency, 50), Rounded(latency, 99), Rounded(ttft, 50), Rounded(ttft, 99),
            Math.Round(answered.Sum(s => s.RemoteBatches) / Math.Max(1, tokens), 2))
        {
            RefusedAtCapacity = samples.Count(s => s.RefusedAtCapacity),
            RequestsByEdge = new SortedDictionary<string, int>(samples.GroupBy(s => s.Edge).ToDictionary(g => g.Key, g => g.Count()), StringComparer.Ordinal),
        };
    }

    private static double? Rounded(List<double> samples, double percentile) =>
        samples.Count == 0 ? null : Math.Round(Stats.Percentile(samples, percentile), 2);
}

/// <summary>What <c>bench load</c> runs.</summary>
public sealed record LoadBenchmarkSettings
{
    public string? Model { get; init; }
    public int Edges { get; init; } = 3;
    public IReadOnlyList<int> Concurrency { get; init; } = [1, 4, 16];

    /// <summary>Requests per level; none: <see cref="DefaultRequests"/>.</summary>
    public int? RequestsPerLevel { get; init; }

    public int MaxTokens { get; init; } = 32;
    public double LinkDelayMs { get; init; }
    public double LinkMbps { get; init; }

    /// <summary>Poisson arrivals per second instead of closed-loop clients; the level's concurrency caps requests in flight.</summary>
    public double? Rate { get; init; }

    public int Seed { get; init; } = 1;
    public bool Json { get; init; }

    /// <summary>The edges' and the oracle's execution provider, as <c>edge --provider</c> takes it: <c>cpu</c> or <c>cuda</c>.</summary>
    public string Provider { get; init; } = "cpu";

    /// <summary>
    /// The one edge (1-based) every request goes to, the others serving its experts only; none: request i to edge
    /// (i mod edges) + 1.
    /// </summary>
    public int? OnlyEdge { get; init; }

    /// <summary>Then the highest level on one cluster with metrics on and off, <see cref="OverheadRounds"/> rounds of one each.</summary>
    public bool MetricsOverhead { get; init; }

    public int OverheadRounds { get; init; } = 8;

    /// <summary>Port of edge-1's /metrics when metrics are on (edge-i: this + i - 1), as <c>cluster up</c>.</summary>
    public int MetricsPortBase { get; init; } = 9470;

    /// <summary>Enough requests that every client sends four, and at least 16: a level of a few seconds, not one of warm-up.</summary>
    public static int DefaultRequests(int concurrency) => Math.Max(4 * concurrency, 16);

    public int RequestsAt(int concurrency) => RequestsPerLevel ?? DefaultRequests(concurrency);

    /// <summary>Times every level runs, the levels in turns (1, 16, 1, 16, ...); each level's figures pool its rounds.</summary>
    public int Rounds { get; init; } = 1;

    /// <summary>The edge request <paramref name="index"/> goes to.</summary>
    public string EdgeOf(int index) => $"edge-{OnlyEdge ?? ((index % Edges) + 1)}";
}
