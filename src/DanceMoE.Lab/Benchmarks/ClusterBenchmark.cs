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
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>
/// <c>dancemoe bench cluster</c>: in one run, the monolithic forward loop vs a local cluster with a
/// uniform placement, without and with link emulation; and the overhead of our remote expert path vs a
/// bare MassTransit request/response carrying the same payload to an echo in another process.
/// </summary>
public static class ClusterBenchmark
{
    internal static readonly string[] Prompts =
    [
        "The court held that the contract was void because",
        "NAME\n       grep - print lines that match patterns",
        "def read_config(path):\n    with open(path) as f:",
        "Die Datei wird gelesen und",
        "La commande affiche",
        "Edge servers share the experts of one model",
    ];

    private const int OverheadRuns = 3;

    private static readonly TimeSpan EchoStartTimeout = TimeSpan.FromSeconds(15);

    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    /// <summary>Runs the benchmark; the report (a table, or JSON) goes to <paramref name="output"/>, progress to <paramref name="log"/>.</summary>
    public static async Task<ClusterBenchmarkReport> RunAsync(ClusterBenchmarkSettings settings, TextWriter output, TextWriter log, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(log);
        LabChecks.EnsureNoCluster();
        var (edges, requests, maxTokens, delayMs, mbps) = (settings.Edges, settings.Requests, settings.MaxTokens, settings.LinkDelayMs, settings.LinkMbps);
        var exported = ModelCatalog.ResolveExported(settings.Model, log.WriteLine);
        var manifest = ModelManifest.Load(exported);
        var prompts = Enumerable.Range(0, requests).Select(i => Prompts[i % Prompts.Length]).ToList();
        var rows = new List<RunFigures>();

        log.WriteLine("bench: monolithic...");
        rows.Add(await MonolithicAsync(manifest, prompts, maxTokens, cancellationToken).ConfigureAwait(false));

        OverheadFigures overhead;
        log.WriteLine($"bench: {edges} edges, uniform placement, no link emulation...");
        await LocalCluster.UpAsync(new ClusterSpec { Edges = edges, Model = exported }, log.WriteLine, cancellationToken).ConfigureAwait(false);
        try
        {
            rows.Add(await DistributedAsync("distributed", edges, prompts, maxTokens, cancellationToken).ConfigureAwait(false));
            overhead = await OverheadAsync(manifest, settings.RoundTrips, log, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await LocalCluster.DownAsync(CancellationToken.None).ConfigureAwait(false);
        }

        var label = string.Create(CultureInfo.InvariantCulture, $"distributed+link({2 * delayMs:0.#}ms rtt,{mbps:0.#}Mbps)");
        log.WriteLine($"bench: {edges} edges, uniform placement, {label}...");
        await LocalCluster.UpAsync(new ClusterSpec { Edges = edges, Model = exported, LinkDelayMs = delayMs, LinkMbps = mbps }, log.WriteLine, cancellationToken).ConfigureAwait(false);
        try
        {
            rows.Add(await DistributedAsync(label, edges, prompts, maxTokens, cancellationToken).ConfigureAwait(false));
        }
        finally
        {
            await LocalCluster.DownAsync(CancellationToken.None).ConfigureAwait(false);
        }

        var report = new ClusterBenchmarkReport(rows, overhead);
        var mono = rows[0];
        if (settings.Json)
        {
            output.WriteLine(JsonSerializer.Serialize(report, Json));
            return report;
        }

        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"model {manifest.Architecture.RoutedLayers} layers x {manifest.Architecture.NumExperts} experts (top-{manifest.Architecture.TopK}), hidden {manifest.Architecture.HiddenSize}; {requests} requests x {maxTokens} tokens"));
        output.WriteLine("run                                   tokens/s  vs mono  ms/token p50  ms/token p99  remote calls/token  KiB/token");
        foreach (var r in rows)
        {
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{r.Run,-36} {r.TokensPerSecond,9:F1} {r.TokensPerSecond / mono.TokensPerSecond,8:F2} {r.MsPerTokenP50,13:F1} {r.MsPerTokenP99,13:F1} {r.RemoteCallsPerToken,19:F1} {r.RemoteKibPerToken,10:F1}"));
        }

        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"round trip with a {overhead.PayloadBytes}-byte payload and a {overhead.ResultBytes}-byte result ({overhead.RoundTrips} each, median; the run with the median ratio of {overhead.RunRatios.Count}): bare MassTransit request/response {overhead.BareMedianMs:F2} ms (p99 {overhead.BareP99Ms:F2}); "
            + $"our expert batch {overhead.ExpertBatchMedianMs:F2} ms (p99 {overhead.ExpertBatchP99Ms:F2}) of which expert compute {overhead.ExpertComputeMedianMs:F3} ms; overhead ratio {overhead.Ratio:F2}x (runs: {string.Join(", ", overhead.RunRatios.Select(r => r.ToString("F2", CultureInfo.InvariantCulture)))}); "
            + $"request body {overhead.MessageBytes} bytes on the lane vs {overhead.JsonMessageBytes} as JSON, whose round trip is {overhead.JsonExpertBatchMedianMs:F2} ms"));
        return report;
    }

    private static async Task<RunFigures> MonolithicAsync(ModelManifest manifest, List<string> prompts, int maxTokens, CancellationToken cancellationToken)
    {
        var factory = new SessionFactory(new InferenceOptions { Provider = ExecutionProvider.Cpu, IntraOpThreads = 1, InterOpThreads = 1 });
        using var pool = new ExpertSessionPool(manifest, factory);
        pool.LoadAll();
        using var forward = new MoeForward(manifest, factory, new LocalExpertDispatcher(pool));
        var tokenizer = manifest.Tokenizer is { } t ? new ByteTokenizer(t.BosTokenId, t.EosTokenId) : ByteTokenizer.Default;
        var perToken = new List<double>();
        var tokens = 0;
        _ = await Generator.GenerateAsync(forward, tokenizer, tokenizer.Encode(prompts[0]), maxTokens, new SamplingOptions(), new ForwardContext(), cancellationToken).ConfigureAwait(false);
        var total = Stopwatch.StartNew();
        foreach (var prompt in prompts)
        {
            var clock = Stopwatch.StartNew();
            var result = await Generator.GenerateAsync(forward, tokenizer, tokenizer.Encode(prompt), maxTokens, new SamplingOptions(), new ForwardContext(), cancellationToken).ConfigureAwait(false);
            tokens += result.TokenIds.Count;
            perToken.Add(clock.Elapsed.TotalMilliseconds / Math.Max(1, result.TokenIds.Count));
        }

        return RunFigures.From("monolithic", tokens, total.Elapsed, perToken, 0, 0);
    }

    internal static async Task<RunFigures> DistributedAsync(string run, int edges, List<string> prompts, int maxTokens, CancellationToken cancellationToken)
    {
        var perToken = new List<double>();
        var tokens = 0;
        long remoteCalls = 0;
        long remoteBytes = 0;
        await using var client = await BusClient.StartAsync(LocalEnvironment.RabbitMqUri, cancellationToken).ConfigureAwait(false);

        // One request per edge first, not counted: the edges compile their serving path on its first request.
        for (var e = 0; e < edges; e++)
        {
            await EdgeRequests.SendAsync(client.Requests, $"edge-{e + 1}",
                new GenerateText { RequestId = NewId.NextGuid(), Prompt = prompts[e % prompts.Count], MaxNewTokens = maxTokens, WorkloadTag = "bench-warm-up" },
                TimeSpan.FromSeconds(300), cancellationToken).ConfigureAwait(false);
        }

        var total = Stopwatch.StartNew();
        for (var i = 0; i < prompts.Count; i++)
        {
            var clock = Stopwatch.StartNew();
            var answer = await EdgeRequests.SendAsync(client.Requests, $"edge-{(i % edges) + 1}",
                new GenerateText { RequestId = NewId.NextGuid(), Prompt = prompts[i], MaxNewTokens = maxTokens, WorkloadTag = "bench" },
                TimeSpan.FromSeconds(300), cancellationToken).ConfigureAwait(false);
            tokens += answer.TokenIds.Count;
            remoteCalls += answer.Stats.RemoteExpertCalls;
            remoteBytes += answer.Stats.RemoteBytes;
            perToken.Add(clock.Elapsed.TotalMilliseconds / Math.Max(1, answer.TokenIds.Count));
        }

        return RunFigures.From(run, tokens, total.Elapsed, perToken, remoteCalls, remoteBytes);
    }

    /// <summary>
    /// The same bytes through a bare echo consumer (MassTransit's request/response) and through an edge's expert lane, as a
    /// peer edge sends them in a step: two tokens' hidden states once, run by two experts of a layer, answered with one
    /// row per (token, expert); and through the edge's MassTransit experts queue in JSON.
    /// </summary>
    private static async Task<OverheadFigures> OverheadAsync(ModelManifest manifest, int roundTrips, TextWriter log, CancellationToken cancellationToken)
    {
        var hidden = manifest.Architecture.HiddenSize;
        var payload = TensorBytes.FromFloats(Enumerable.Range(0, 2 * hidden).Select(i => (float)Math.Cos(i)).ToArray());
        // Named as an edge's queue: the benchmark talks to the echo and to edge-1 as a peer edge does, with the edge's user.
        const string queue = "edge-bench-echo";
        using var echo = await StartEchoProcessAsync(queue, cancellationToken).ConfigureAwait(false);
        try
        {
            await using var client = await BusClient.StartAsync(
                LocalEnvironment.RabbitMqUriFor(BusRole.Edge), cfg => cfg.AddDeserializer(ExpertBatchSerializer.Instance), cancellationToken).ConfigureAwait(false);
            var bus = client.Bus;
            var bare = bus.CreateRequestClient<RunExpertBatch>(new Uri($"queue:{queue}"), RequestTimeout.After(s: 10));
            var json = bus.CreateRequestClient<RunExpertBatch>(EdgeQueues.ExpertsAddress("edge-1"), RequestTimeout.After(s: 10));
            await using var lane = new ExpertLane(
                Options.Create(new RabbitMqOptions { ConnectionString = LocalEnvironment.RabbitMqUriFor(BusRole.Edge) }),
                Options.Create(new EdgeOptions { Id = "edge-bench-peer" }),
                NullLogger<ExpertLane>.Instance);
            await lane.ConnectAsync(cancellationToken).ConfigureAwait(false);
            var held = PlacementFile.Load(Path.Combine(LocalCluster.Directory, "placement.json")).ExpertsOf("edge-1").ToList();
            var layer = held.GroupBy(h => h.Layer).OrderByDescending(g => g.Count()).First();
            var slices = layer.Take(2).Select(h => new ExpertSlice { Expert = h.Expert, Rows = 2, TokenRows = [0, 1] }).ToList();
            RunExpertBatch Batch() => new()
            {
                BatchId = NewId.NextGuid(),
                OriginEdgeId = "bench",
                Layer = layer.Key,
                HiddenSize = hidden,
                Slices = slices,
                Hidden = payload,
            };

            var (binaryBytes, jsonBytes) = (ExpertBatchSerializer.Encode(Batch()).Length, ExpertBatchSerializer.JsonMessageBytes(Batch()));
            void Binary(SendContext send) => send.Serializer = ExpertBatchSerializer.Instance;
            log.WriteLine($"bench: {OverheadRuns} runs of {roundTrips} round trips each through a bare echo consumer in its own process and through edge-1's expert lane, and through edge-1's MassTransit expert queue in JSON...");
            var runs = new List<OverheadFigures>();
            for (var run = 0; run < OverheadRuns; run++)
            {
                var bareMs = new List<double>();
                var edgeMs = new List<double>();
                var computeMs = new List<double>();
                var jsonMs = new List<double>();
                for (var i = 0; i < roundTrips + 10; i++)
                {
                    var clock = Stopwatch.StartNew();
                    await bare.GetResponse<ExpertBatchResult>(Batch(), x => x.UseExecute(Binary), cancellationToken).ConfigureAwait(false);
                    var b = clock.Elapsed.TotalMilliseconds;
                    clock.Restart();
                    var result = await lane.CallAsync("edge-1", Batch(), TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false);
                    var e = clock.Elapsed.TotalMilliseconds;
                    clock.Restart();
                    await json.GetResponse<ExpertBatchResult>(Batch(), cancellationToken).ConfigureAwait(false);
                    var j = clock.Elapsed.TotalMilliseconds;
                    if (i >= 10)
                    {
                        bareMs.Add(b);
                        edgeMs.Add(e);
                        jsonMs.Add(j);
                        computeMs.Add(result.ComputeMs);
                    }
                }

                runs.Add(new OverheadFigures(payload.Length, slices.Sum(x => x.Rows) * hidden * sizeof(float), roundTrips, Stats.Median(bareMs), Stats.Percentile(bareMs, 99),
                    Stats.Median(edgeMs), Stats.Percentile(edgeMs, 99), Stats.Median(computeMs), Stats.Median(edgeMs) / Stats.Median(bareMs), [])
                {
                    MessageBytes = binaryBytes,
                    JsonMessageBytes = jsonBytes,
                    JsonExpertBatchMedianMs = Stats.Median(jsonMs),
                });
            }

            // The run with the median ratio, so one noisy run on a shared machine does not decide.
            var median = runs.OrderBy(r => r.Ratio).ElementAt(runs.Count / 2);
            return median with { RunRatios = [.. runs.Select(r => Math.Round(r.Ratio, 3))] };
        }
        finally
        {
            echo.Kill();
            await echo.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            await BusClient.DeleteQueueAsync(LocalEnvironment.RabbitMqUriFor(BusRole.Edge), queue, CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The bare echo runs in its own process, as the edge does: in the benchmark's process it would answer from threads
    /// already awake, which a process on the other side of the broker never has.
    /// </summary>
    private static async Task<Process> StartEchoProcessAsync(string queue, CancellationToken cancellationToken)
    {
        var ready = Path.Combine(LocalCluster.Directory, "echo.ready");
        var logFile = Path.Combine(LocalCluster.Directory, "echo.log");
        File.Delete(ready);
        var echo = Process.Start(CliProcesses.StartInfo(["bench", "echo", "--queue", queue, "--ready-file", ready], logFile, detached: false, serving: true, role: BusRole.Edge))
            ?? throw new OperationException("cannot start /bin/sh");
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!File.Exists(ready))
        {
            if (echo.HasExited || DateTime.UtcNow > deadline)
            {
                echo.Kill();
                echo.Dispose();
                throw new OperationException($"the echo process did not start; its log is {logFile}");
            }

            await Task.Delay(100, cancellationToken).ConfigureAwait(false);
        }

        return echo;
    }

    /// <summary><c>dancemoe bench echo</c>: answers expert batches on <paramref name="queue"/> with their own input until cancelled.</summary>
    public static async Task ServeEchoAsync(string queue, string? readyFile, CancellationToken cancellationToken)
    {
        var rabbitMqUri = LocalEnvironment.RabbitMqUriFor(BusRole.Edge);
        await using var provider = new ServiceCollection()
            .AddMassTransit(bus =>
            {
                bus.DisableUsageTelemetry();
                bus.AddConsumer<EchoBatchConsumer>();
                bus.UsingRabbitMq((context, cfg) =>
                {
                    // As the edge it stands in for: the client's user may not take an edge's queue.
                    new RabbitMqOptions { ConnectionString = rabbitMqUri }.ConfigureHost(cfg);
                    cfg.AddDeserializer(ExpertBatchSerializer.Instance);
                    // A plain durable queue: a send to `queue:` declares it durable, and a temporary queue would clash with that.
                    cfg.ReceiveEndpoint(queue, e => e.ConfigureConsumer<EchoBatchConsumer>(context));
                });
            })
            .BuildServiceProvider(true);
        var bus = provider.GetRequiredService<IBusControl>();
        // Sooner than a client gives up: bench cluster waits 60 s for the echo to be ready and should hear why it is not.
        await BusStarter.StartAsync(bus, rabbitMqUri, $"cannot serve {queue}", LocalEnvironment.RabbitMqSettingsOf(BusRole.Edge), EchoStartTimeout, cancellationToken)
            .ConfigureAwait(false);

        try
        {
            if (readyFile is not null)
            {
                await File.WriteAllTextAsync(readyFile, Environment.ProcessId.ToString(CultureInfo.InvariantCulture), cancellationToken).ConfigureAwait(false);
            }

            await Task.Delay(Timeout.Infinite, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
        finally
        {
            await bus.StopAsync(CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>Answers an expert batch with each slice's token rows as its output: MassTransit's round trip of the same bytes and nothing else.</summary>
    private sealed class EchoBatchConsumer : IConsumer<RunExpertBatch>
    {
        public Task Consume(ConsumeContext<RunExpertBatch> context)
        {
            var batch = context.Message;
            var rowBytes = batch.HiddenSize * sizeof(float);
            var rows = batch.Slices.SelectMany(s => s.TokenRows).ToList();
            var output = new byte[rows.Count * rowBytes];
            for (var r = 0; r < rows.Count; r++)
            {
                batch.Hidden.AsSpan(rows[r] * rowBytes, rowBytes).CopyTo(output.AsSpan(r * rowBytes));
            }

            return context.RespondAsync(new ExpertBatchResult
            {
                BatchId = batch.BatchId,
                EdgeId = "echo",
                Layer = batch.Layer,
                Slices = [.. batch.Slices.Select(s => new ExpertSlice { Expert = s.Expert, Rows = s.Rows })],
                Output = output,
            }, send =>
            {
                if (ExpertBatchSerializer.CameIn(context))
                {
                    send.Serializer = ExpertBatchSerializer.Instance;
                }
            });
        }
    }
}

public sealed record RunFigures(string Run, int Tokens, double Seconds, double TokensPerSecond, double MsPerTokenP50, double MsPerTokenP99, double RemoteCallsPerToken, double RemoteKibPerToken)
{
    public static RunFigures From(string run, int tokens, TimeSpan elapsed, IReadOnlyCollection<double> perToken, long remoteCalls, long remoteBytes) =>
        new(run, tokens, Math.Round(elapsed.TotalSeconds, 3), Math.Round(tokens / elapsed.TotalSeconds, 2),
            Math.Round(Stats.Median(perToken), 2), Math.Round(Stats.Percentile(perToken, 99), 2),
            Math.Round((double)remoteCalls / Math.Max(1, tokens), 2), Math.Round(remoteBytes / 1024.0 / Math.Max(1, tokens), 2));
}

/// <summary>What <c>bench cluster</c> measured; <c>--json</c> prints it.</summary>
public sealed record ClusterBenchmarkReport(IReadOnlyList<RunFigures> Runs, OverheadFigures Overhead);

/// <summary>What <c>bench cluster</c> runs.</summary>
public sealed record ClusterBenchmarkSettings
{
    public string? Model { get; init; }
    public int Edges { get; init; } = 3;
    public int Requests { get; init; } = 6;
    public int MaxTokens { get; init; } = 24;
    public double LinkDelayMs { get; init; } = 1;
    public double LinkMbps { get; init; } = 500;
    public int RoundTrips { get; init; } = 200;
    public bool Json { get; init; }
}

public sealed record OverheadFigures(
    int PayloadBytes, int ResultBytes, int RoundTrips, double BareMedianMs, double BareP99Ms, double ExpertBatchMedianMs, double ExpertBatchP99Ms, double ExpertComputeMedianMs, double Ratio,
    IReadOnlyList<double> RunRatios)
{
    /// <summary>The request's body on the expert lane (<see cref="ExpertBatchSerializer.Encode"/>).</summary>
    public int MessageBytes { get; init; }

    /// <summary>The same request as MassTransit's JSON (the tensor as base64).</summary>
    public int JsonMessageBytes { get; init; }

    /// <summary>Round trip of the same batch through the edge sent as JSON, for comparison.</summary>
    public double JsonExpertBatchMedianMs { get; init; }
}
