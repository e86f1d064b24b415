using System.Globalization;
using System.Text.Json;
using DanceMoE.Cli.Commands;
using DanceMoE.Data;
using DanceMoE.Traces;

namespace DanceMoE.Cli.Benchmarks;

/// <summary>
/// <c>dancemoe bench traces</c>: sustained rows/s through our trace writer into PostgreSQL, and the
/// tokens/s of the same local cluster with tracing off and on, in one run.
/// </summary>
public static class TracesBenchmark
{
    public const string Usage = "bench traces [--rows 300000] [--model DIR] [--edges 3] [--requests 6] [--max-tokens 24] [--json]";

    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    public static async Task<int> RunAsync(Arguments args, CancellationToken cancellationToken)
    {
        var rows = args.Int("rows", 300_000, 1000, 100_000_000);
        var edges = args.Int("edges", 3, 2, 16);
        var requests = args.Int("requests", 6, 1, 1000);
        var maxTokens = args.Int("max-tokens", 24, 1, 512);
        var model = args.Option("model");
        var asJson = args.Flag("json");
        args.EnsureAllUsed(1);
        if (ClusterCommand.RunningEdges().Count > 0)
        {
            throw new CliException("a cluster is already running: ./dancemoe cluster down first (the benchmark starts its own)");
        }

        await DbCommand.MigrateAsync(CliEnvironment.PostgresUrl, TimeSpan.FromSeconds(30), cancellationToken).ConfigureAwait(false);
        Console.Error.WriteLine($"bench: {rows} routing records (26 layers x 64 experts, top-6 shape) through the trace writer...");
        var writer = await TraceBenchmark.RunAsync(DatabaseOptions.ToNpgsql(CliEnvironment.PostgresUrl), rows, null, cancellationToken).ConfigureAwait(false);

        var exported = ModelCatalog.ResolveExported(model, Console.Error.WriteLine);
        var prompts = Enumerable.Range(0, requests).Select(i => ClusterBenchmark.Prompts[i % ClusterBenchmark.Prompts.Length]).ToList();
        var runs = new List<RunFigures>();
        foreach (var traces in new[] { false, true })
        {
            var label = traces ? "cluster, tracing on" : "cluster, tracing off";
            Console.Error.WriteLine($"bench: {label}...");
            await ClusterCommand.UpAsync(new ClusterSpec { Edges = edges, Model = exported, Traces = traces }, Console.Error.WriteLine, cancellationToken).ConfigureAwait(false);
            try
            {
                runs.Add(await ClusterBenchmark.DistributedAsync(label, edges, prompts, maxTokens, cancellationToken).ConfigureAwait(false));
            }
            finally
            {
                await ClusterCommand.DownAsync(CancellationToken.None).ConfigureAwait(false);
            }
        }

        if (asJson)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                Writer = new { writer.Rows, Seconds = writer.Elapsed.TotalSeconds, RowsPerSecond = Math.Round(writer.RowsPerSecond), writer.AddNanoseconds, writer.Batches, writer.RowsInDatabase, writer.Activations },
                Runs = runs,
                TracingCost = Math.Round(1 - (runs[1].TokensPerSecond / runs[0].TokensPerSecond), 4),
            }, Json));
            return ExitCodes.Ok;
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"trace writer: {writer.Rows} rows in {writer.Elapsed.TotalSeconds:F2} s = {writer.RowsPerSecond:F0} rows/s sustained ({writer.Batches} COPY batches, {writer.AddNanoseconds:F0} ns per Add, {writer.RowsInDatabase} rows in routing_events, {writer.Activations} activations rolled up)"));
        Console.WriteLine("run                         tokens/s  ms/token p50  ms/token p99");
        foreach (var r in runs)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{r.Run,-26} {r.TokensPerSecond,9:F1} {r.MsPerTokenP50,13:F1} {r.MsPerTokenP99,13:F1}"));
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"tracing on / off tokens/s: {runs[1].TokensPerSecond / runs[0].TokensPerSecond:F3}"));
        return ExitCodes.Ok;
    }
}
