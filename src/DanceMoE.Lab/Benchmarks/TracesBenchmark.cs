using System.Globalization;
using System.Text.Json;
using DanceMoE.Data;
using DanceMoE.Operations;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>
/// <c>dancemoe bench traces</c>: sustained rows/s through our trace writer into PostgreSQL, and the
/// tokens/s of the same local cluster with tracing off and on, in one run.
/// </summary>
public static class TracesBenchmark
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    /// <summary>Runs the benchmark; the report (a table, or JSON) goes to <paramref name="output"/>, progress to <paramref name="log"/>.</summary>
    public static async Task<TracesBenchmarkReport> RunAsync(TracesBenchmarkSettings settings, TextWriter output, TextWriter log, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(log);
        var (rows, edges, requests, maxTokens) = (settings.Rows, settings.Edges, settings.Requests, settings.MaxTokens);
        LabChecks.EnsureNoCluster();

        await LocalDatabase.MigrateAsync(LocalEnvironment.PostgresUrl, TimeSpan.FromSeconds(30), cancellationToken).ConfigureAwait(false);
        log.WriteLine($"bench: {rows} routing records (26 layers x 64 experts, top-6 shape) through the trace writer...");
        var writer = await TraceWriterBenchmark.RunAsync(DatabaseOptions.ToNpgsql(LocalEnvironment.PostgresUrl), rows, null, cancellationToken).ConfigureAwait(false);

        var exported = ModelCatalog.ResolveExported(settings.Model, log.WriteLine);
        var prompts = Enumerable.Range(0, requests).Select(i => ClusterBenchmark.Prompts[i % ClusterBenchmark.Prompts.Length]).ToList();
        var runs = new List<RunFigures>();
        foreach (var traces in new[] { false, true })
        {
            var label = traces ? "cluster, tracing on" : "cluster, tracing off";
            log.WriteLine($"bench: {label}...");
            await LocalCluster.UpAsync(new ClusterSpec { Edges = edges, Model = exported, Traces = traces }, log.WriteLine, cancellationToken).ConfigureAwait(false);
            try
            {
                runs.Add(await ClusterBenchmark.DistributedAsync(label, edges, prompts, maxTokens, cancellationToken).ConfigureAwait(false));
            }
            finally
            {
                await LocalCluster.DownAsync(CancellationToken.None).ConfigureAwait(false);
            }
        }

        var report = new TracesBenchmarkReport(writer, runs);
        if (settings.Json)
        {
            output.WriteLine(JsonSerializer.Serialize(new
            {
                Writer = new { writer.Rows, Seconds = writer.Elapsed.TotalSeconds, RowsPerSecond = Math.Round(writer.RowsPerSecond), writer.AddNanoseconds, writer.Batches, writer.RowsInDatabase, writer.Activations },
                Runs = runs,
                TracingCost = Math.Round(1 - (runs[1].TokensPerSecond / runs[0].TokensPerSecond), 4),
            }, Json));
            return report;
        }

        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"trace writer: {writer.Rows} rows in {writer.Elapsed.TotalSeconds:F2} s = {writer.RowsPerSecond:F0} rows/s sustained ({writer.Batches} COPY batches, {writer.AddNanoseconds:F0} ns per Add, {writer.RowsInDatabase} rows in routing_events, {writer.Activations} activations rolled up)"));
        output.WriteLine("run                         tokens/s  ms/token p50  ms/token p99");
        foreach (var r in runs)
        {
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{r.Run,-26} {r.TokensPerSecond,9:F1} {r.MsPerTokenP50,13:F1} {r.MsPerTokenP99,13:F1}"));
        }

        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"tracing on / off tokens/s: {runs[1].TokensPerSecond / runs[0].TokensPerSecond:F3}"));
        return report;
    }
}

/// <summary>What <c>bench traces</c> measured: the writer alone, then the cluster with tracing off and on.</summary>
public sealed record TracesBenchmarkReport(TraceWriterBenchmarkResult Writer, IReadOnlyList<RunFigures> Runs);

/// <summary>What <c>bench traces</c> runs.</summary>
public sealed record TracesBenchmarkSettings
{
    public int Rows { get; init; } = 300_000;
    public string? Model { get; init; }
    public int Edges { get; init; } = 3;
    public int Requests { get; init; } = 6;
    public int MaxTokens { get; init; } = 24;
    public bool Json { get; init; }
}
