using System.CommandLine;
using System.Globalization;
using DanceMoE.Cli.Verbs;
using DanceMoE.Inference;
using DanceMoE.Lab.Benchmarks;

namespace DanceMoE.Cli.Commands;

/// <summary><c>dancemoe bench expert|expert-exec|cluster|load|traces|shift|replay|chaos|link|echo</c>: the benchmarks of the lab, from the command line.</summary>
public static class BenchCommand
{
    /// <summary>The <c>bench</c> verb, its five benchmarks and the echo <c>bench cluster</c> measures against.</summary>
    public static Command Create() => new("bench", "benchmarks")
    {
        Expert(),
        ExpertExecution(),
        Cluster(),
        Load(),
        Traces(),
        Shift(),
        BenchReplayCommand.Create(),
        BenchChaosCommand.Create(),
        Link(),
        Echo(),
    };

    private static Command Expert()
    {
        var model = CliOptions.Model();
        var layer = CliOptions.Int("layer", 0, "layer of the expert", 0);
        var expert = CliOptions.Int("expert", 0, "expert in that layer", 0);
        var iterations = CliOptions.Int("iterations", 50, "runs per batch size (the median is reported)", 1, 100_000);
        var command = new Command("expert", "latency and GFLOP/s of one expert next to a plain matrix product of the same size") { model, layer, expert, iterations };
        var inference = new InferenceArguments(command);
        command.SetAction((result, cancellationToken) =>
        {
            var settings = new ExpertBenchmarkSettings
            {
                ModelDirectory = InferenceArguments.ResolveModel(result.GetValue(model)),
                Layer = result.GetValue(layer),
                Expert = result.GetValue(expert),
                Iterations = result.GetValue(iterations),
                Inference = inference.Read(result),
            };
            ExpertBenchmark.Run(settings, Console.Out, Console.Error, cancellationToken);
            return Task.FromResult(ExitCodes.Ok);
        });
        return command;
    }

    private static Command ExpertExecution()
    {
        var model = CliOptions.Model();
        var layer = CliOptions.Int("layer", 0, "layer whose experts run", 0);
        var sequences = CliOptions.Int("sequences", 16, "active sequences of a step (a decode step has one token each)", 1, 4096);
        var prefill = CliOptions.Int("prefill-tokens", 24, "tokens per sequence of the prefill step", 1, 4096);
        var iterations = CliOptions.Int("iterations", 50, "runs per variant (the median is reported)", 1, 100_000);
        var command = new Command("expert-exec",
            "one layer's experts on a decode and a prefill step: today's per-expert Run against preallocated outputs, IOBinding, "
            + "intra-op threads 1 and 2, experts in parallel and one session per layer; then decode steps with the KV cache in managed arrays and in native buffers; ratios and bit-identity")
        {
            model, layer, sequences, prefill, iterations,
        };
        var provider = CliOptions.Provider();
        command.Options.Add(provider);
        command.SetAction(async (result, cancellationToken) =>
        {
            var settings = new ExpertExecutionBenchmarkSettings
            {
                ModelDirectory = InferenceArguments.ResolveModel(result.GetValue(model)),
                Layer = result.GetValue(layer),
                Sequences = result.GetValue(sequences),
                PrefillTokens = result.GetValue(prefill),
                Iterations = result.GetValue(iterations),
                Inference = new() { Provider = InferenceOptions.ParseProvider(result.GetValue(provider)) },
            };
            ExpertExecutionBenchmark.Run(settings, Console.Out, Console.Error, cancellationToken);
            var kv = new KvCacheBenchmarkSettings { ModelDirectory = settings.ModelDirectory, Sequences = settings.Sequences, Iterations = settings.Iterations, Inference = settings.Inference };
            return await KvCacheBenchmark.RunAsync(kv, Console.Out, cancellationToken).ConfigureAwait(false) ? ExitCodes.Ok : ExitCodes.Failed;
        });
        return command;
    }

    private static Command Cluster()
    {
        var model = CliOptions.Model();
        var edges = CliOptions.Int("edges", 3, "edges of the cluster", 2, 16);
        var requests = CliOptions.Int("requests", 6, "requests per run", 1, 1000);
        var maxTokens = CliOptions.Int("max-tokens", 24, "tokens per answer", 1, 512);
        var linkDelay = CliOptions.Double("link-delay-ms", 1, "emulated one-way link delay of the emulated run", 0, 10_000);
        var linkMbps = CliOptions.Double("link-mbps", 500, "emulated link bandwidth of the emulated run", 0, 1_000_000);
        var roundTrips = CliOptions.Int("round-trips", 200, "round trips of the overhead measurement", 10, 100_000);
        var json = CliOptions.Flag("json", "print JSON");
        var command = new Command("cluster", "monolithic vs a local cluster, with and without link emulation, and the remote expert path's overhead")
        {
            model, edges, requests, maxTokens, linkDelay, linkMbps, roundTrips, json,
        };
        command.SetAction(async (result, cancellationToken) =>
        {
            var settings = new ClusterBenchmarkSettings
            {
                Edges = result.GetValue(edges),
                Requests = result.GetValue(requests),
                MaxTokens = result.GetValue(maxTokens),
                LinkDelayMs = result.GetValue(linkDelay),
                LinkMbps = result.GetValue(linkMbps),
                RoundTrips = result.GetValue(roundTrips),
                Model = result.GetValue(model),
                Json = result.GetValue(json),
            };
            await Progress.RunAsync("bench cluster", log => ClusterBenchmark.RunAsync(settings, Console.Out, log, cancellationToken)).ConfigureAwait(false);
            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Load()
    {
        var model = CliOptions.Model();
        var edges = CliOptions.Int("edges", 3, "edges of the cluster", 2, 16);
        var concurrency = CliOptions.Text("concurrency", "concurrency levels: clients in a closed loop (with --rate: requests in flight at most)", "1,4,16", valueName: "C,C,...");
        var requestsPerLevel = CliOptions.OptionalInt("requests-per-level", "requests at each level (default: 4 per client, at least 16)", 1, 100_000);
        var maxTokens = CliOptions.Int("max-tokens", 32, "tokens per answer (greedy)", 1, 512);
        var linkDelay = CliOptions.Double("link-delay-ms", 0, "emulated one-way link delay between edges (0: none)", 0, 10_000);
        var linkMbps = CliOptions.Double("link-mbps", 0, "emulated link bandwidth between edges (0: unlimited)", 0, 1_000_000);
        var rate = CliOptions.OptionalDouble("rate", "Poisson arrivals per second (seeded) instead of closed-loop clients", 0.001, 100_000);
        var rounds = CliOptions.Int("rounds", 1, "run the levels this many times in turns (1, 16, 1, 16, ...) on one cluster; each level's figures pool its rounds", 1, 100);
        var onlyEdge = CliOptions.OptionalInt("only-edge", "send every request to edge-N, the other edges serving its experts only (default: request i to edge (i mod edges) + 1)", 1, 16);
        var json = CliOptions.Flag("json", "print JSON: one object per level (with --metrics-overhead: {levels, metrics_overhead})");
        var metricsOverhead = CliOptions.Flag("metrics-overhead",
            "then run the highest level on one cluster, rounds of one level with metrics on (scraped every second, per-expert counters) and one off; prints median ratios");
        var overheadRounds = CliOptions.Int("overhead-rounds", 8, "rounds of --metrics-overhead", 1, 1000);
        var metricsPortBase = CliOptions.Int("metrics-port-base", 9470, "with --metrics-overhead: edge-i serves /metrics on 127.0.0.1 at this port + i - 1", 1024, 65000);
        var provider = CliOptions.Choice("provider", "execution provider of the edges and of the monolithic oracle", "cpu", "cuda");
        var command = new Command("load", "tokens/s and latency of a local cluster under concurrent requests, each answer checked against the monolithic one. "
            + "Per-token time is per request: (latency - time to first token) / (tokens - 1); time to first token is the client's latency less the edge's time after its first token")
        {
            model, edges, concurrency, requestsPerLevel, rounds, maxTokens, linkDelay, linkMbps, rate, onlyEdge, provider, json, metricsOverhead, overheadRounds, metricsPortBase,
        };
        command.SetAction(async (result, cancellationToken) =>
        {
            var settings = new LoadBenchmarkSettings
            {
                Model = result.GetValue(model),
                Edges = result.GetValue(edges),
                Concurrency = Levels(result.GetRequiredValue(concurrency)),
                RequestsPerLevel = result.GetValue(requestsPerLevel),
                Rounds = result.GetValue(rounds),
                MaxTokens = result.GetValue(maxTokens),
                LinkDelayMs = result.GetValue(linkDelay),
                LinkMbps = result.GetValue(linkMbps),
                Rate = result.GetValue(rate),
                OnlyEdge = result.GetValue(onlyEdge),
                Provider = result.GetRequiredValue(provider),
                Json = result.GetValue(json),
                MetricsOverhead = result.GetValue(metricsOverhead),
                OverheadRounds = result.GetValue(overheadRounds),
                MetricsPortBase = result.GetValue(metricsPortBase),
            };
            var levels = await Progress.RunAsync("bench load", log => LoadBenchmark.RunAsync(settings, Console.Out, log, cancellationToken)).ConfigureAwait(false);
            var failed = levels.Sum(l => l.Failed);
            var mismatches = levels.Sum(l => l.OracleMismatches);
            if (failed > 0 || mismatches > 0)
            {
                await Console.Error.WriteLineAsync($"dancemoe: warning: {failed} requests failed and {mismatches} answers differ from the monolithic oracle").ConfigureAwait(false);
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Link()
    {
        var delay = CliOptions.Double("delay-ms", 1, "emulated one-way delay", 0, 10_000);
        var mbps = CliOptions.Double("mbps", 500, "emulated bandwidth in Mbit/s (0: unlimited)", 0, 1_000_000);
        var bytes = CliOptions.Int("bytes", 2048, "bytes of the batch", 0, 64 * 1024 * 1024);
        var samples = CliOptions.Int("samples", 200, "transmissions, one at a time, of each kind", 10, 100_000);
        var json = CliOptions.Flag("json", "print JSON");
        var command = new Command("link", "how long the edges' link emulation holds a batch against what it asks for, next to Task.Delay") { delay, mbps, bytes, samples, json };
        command.SetAction(async (result, cancellationToken) =>
        {
            var settings = new LinkBenchmarkSettings(result.GetValue(delay), result.GetValue(mbps), result.GetValue(bytes), result.GetValue(samples), result.GetValue(json));
            await LinkBenchmark.RunAsync(settings, Console.Out, cancellationToken).ConfigureAwait(false);
            return ExitCodes.Ok;
        });
        return command;
    }

    /// <summary>The bare echo <c>bench cluster</c> starts in its own process for its overhead baseline.</summary>
    private static Command Echo()
    {
        var queue = CliOptions.EdgeId("queue", "queue to answer expert batches on, named as an edge (edge-bench-echo)", required: true);
        var readyFile = CliOptions.Text("ready-file", "file to write the process id to once it serves", valueName: "FILE");
        var command = new Command("echo", "answers expert batches with their own input (the baseline of bench cluster's overhead)") { queue, readyFile };
        command.SetAction(async (result, cancellationToken) =>
        {
            await ClusterBenchmark.ServeEchoAsync(result.GetRequiredValue(queue), result.GetValue(readyFile), cancellationToken).ConfigureAwait(false);
            return ExitCodes.Ok;
        });
        return command;
    }

    private static List<int> Levels(string text) =>
        [.. text.Split(',').Select(c => int.TryParse(c, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v > 0 && v <= 10_000
            ? v
            : throw new UsageException($"--concurrency takes numbers from 1 to 10000 separated by commas (got '{c}')"))];

    private static Command Traces()
    {
        var rows = CliOptions.Int("rows", 300_000, "routing events to write", 1000, 100_000_000);
        var model = CliOptions.Model();
        var edges = CliOptions.Int("edges", 3, "edges of the cluster", 2, 16);
        var requests = CliOptions.Int("requests", 6, "requests", 1, 1000);
        var maxTokens = CliOptions.Int("max-tokens", 24, "tokens per answer", 1, 512);
        var json = CliOptions.Flag("json", "print JSON");
        var command = new Command("traces", "rows/s through the trace writer into PostgreSQL, and a local cluster's tokens/s with tracing off and on")
        {
            rows, model, edges, requests, maxTokens, json,
        };
        command.SetAction(async (result, cancellationToken) =>
        {
            var settings = new TracesBenchmarkSettings
            {
                Rows = result.GetValue(rows),
                Edges = result.GetValue(edges),
                Requests = result.GetValue(requests),
                MaxTokens = result.GetValue(maxTokens),
                Model = result.GetValue(model),
                Json = result.GetValue(json),
            };
            await Progress.RunAsync("bench traces", log => TracesBenchmark.RunAsync(settings, Console.Out, log, cancellationToken)).ConfigureAwait(false);
            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Shift()
    {
        var model = CliOptions.Text("model", "model with held-out samples of its domains (default: onnx/default)", valueName: "DIR");
        var requestsPerPhase = CliOptions.Int("requests-per-phase", 10, "requests per edge in each phase", 1, 10_000);
        var warmup = CliOptions.Double("warmup-s", 10, "warm-up before measuring", 0, 3600);
        var maxTokens = CliOptions.Int("max-tokens", 32, "tokens per answer", 1, 512);
        var promptBytes = CliOptions.Int("prompt-bytes", 160, "bytes of each prompt", 8, 4096);
        var memoryMb = CliOptions.Int("memory-mb", 8, "memory budget per edge, MiB", 1, 1_048_576);
        var historyBytes = CliOptions.Int("history-bytes", 8192, "bytes of history per domain", 256, 100_000_000);
        var window = CliOptions.Double("window-minutes", 1, "routing history the placement job reads", 1, 7 * 24 * 60);
        var halfLife = CliOptions.Double("half-life-minutes", 1, "half-life of older routing events", 0, 7 * 24 * 60);
        var deadline = CliOptions.Int("deadline-ms", 10_000, "deadline of a remote expert call", 50, 600_000);
        var requestTimeout = CliOptions.Double("request-timeout-s", 120, "timeout of one request", 1, 3600);
        var migrationTimeout = CliOptions.Double("migration-timeout-s", 300, "timeout of the migration", 1, 24 * 3600);
        var provider = CliOptions.Provider();
        var keepLogs = CliOptions.Flag("keep-logs", "keep the processes' logs");
        var json = CliOptions.Flag("json", "print JSON");
        var algorithm = CliOptions.Algorithm();
        var command = new Command("shift", "the closed loop in one run: a workload shift, the placement job, the migration under load")
        {
            model, requestsPerPhase, warmup, maxTokens, promptBytes, memoryMb, historyBytes, window, halfLife, deadline,
            requestTimeout, migrationTimeout, provider, keepLogs, json, algorithm,
        };
        command.SetAction(async (result, cancellationToken) =>
        {
            var settings = new ShiftBenchmarkSettings
            {
                Model = result.GetValue(model),
                RequestsPerEdge = result.GetValue(requestsPerPhase),
                Warmup = TimeSpan.FromSeconds(result.GetValue(warmup)),
                MaxTokens = result.GetValue(maxTokens),
                PromptBytes = result.GetValue(promptBytes),
                MemoryMb = result.GetValue(memoryMb),
                HistoryBytes = result.GetValue(historyBytes),
                WindowMinutes = result.GetValue(window),
                HalfLifeMinutes = result.GetValue(halfLife),
                Algorithm = result.GetRequiredValue(algorithm),
                DeadlineMs = result.GetValue(deadline),
                RequestTimeout = TimeSpan.FromSeconds(result.GetValue(requestTimeout)),
                MigrationTimeout = TimeSpan.FromSeconds(result.GetValue(migrationTimeout)),
                Provider = result.GetRequiredValue(provider),
                KeepLogs = result.GetValue(keepLogs),
                Json = result.GetValue(json),
            };
            var shift = await Progress.RunAsync("bench shift", log => ShiftBenchmark.RunAsync(settings, Console.Out, log, cancellationToken)).ConfigureAwait(false);
            return shift.Succeeded ? ExitCodes.Ok : ExitCodes.Failed;
        });
        return command;
    }
}
