using System.Diagnostics;
using System.Globalization;
using DanceMoE.Contracts;
using DanceMoE.Coordinator;
using DanceMoE.Data;
using DanceMoE.Hosting;
using DanceMoE.Model.Locality;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DanceMoE.Cli.Commands;

/// <summary>
/// <c>dancemoe demo</c>: the main job. Services up, migrations applied, a local cluster of one edge
/// server per workload domain of the default model, a few requests answered with their local/remote statistics, and the
/// edges' heartbeats recorded in PostgreSQL.
/// </summary>
public sealed class DemoCommand : ICliCommand
{
    private static readonly string[] FallbackPrompts =
    [
        "The court held that the contract",
        "NAME\n       ls - list directory contents",
        "def parse_args(argv):\n    ",
    ];

    public string Verb => "demo";

    public string Usage => "demo [--no-services] [--model DIR] [--max-tokens 48] [--keep]   services, a cluster with one edge per domain of the default model, one request each";

    public async Task<int> RunAsync(Arguments args, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        var noServices = args.Flag("no-services");
        var model = args.Option("model");
        var maxTokens = args.Int("max-tokens", 48, 1, 512);
        var keep = args.Flag("keep");
        args.EnsureAllUsed(0);
        var clock = Stopwatch.StartNew();

        if (!noServices)
        {
            await StartServicesAsync(cancellationToken).ConfigureAwait(false);
        }

        var migration = await DbCommand.MigrateAsync(CliEnvironment.PostgresUrl, TimeSpan.FromSeconds(30), cancellationToken).ConfigureAwait(false);
        Console.WriteLine($"[demo] database migrated ({migration.AllApplied.Count} migrations, {migration.Applied.Count} new)");

        using var membership = await StartMembershipAsync(cancellationToken).ConfigureAwait(false);
        var requests = DemoRequests(model);
        var startedHere = ClusterCommand.RunningEdges().Count == 0;
        if (startedHere)
        {
            Console.WriteLine($"[demo] starting {requests.Count} edge servers (uniform placement: every expert once, spread over them)...");
            var edges = await ClusterCommand.UpAsync(new ClusterSpec { Edges = requests.Count, Model = model }, line => Console.WriteLine($"[demo] {line}"), cancellationToken).ConfigureAwait(false);
            foreach (var e in edges)
            {
                Console.WriteLine($"[demo] {e.Id}: pid {e.Pid}, {e.Experts} experts, budget {e.MemoryMb} MiB");
            }
        }
        else
        {
            Console.WriteLine($"[demo] using the running cluster ({string.Join(", ", ClusterCommand.RunningEdges().Select(e => e.Id))})");
        }

        try
        {
            foreach (var (edge, domain, prompt) in requests)
            {
                var answer = await InferCommand.SendAsync(CliEnvironment.RabbitMqUri, edge, new GenerateText
                {
                    RequestId = NewId.NextGuid(),
                    Prompt = prompt,
                    MaxNewTokens = maxTokens,
                    WorkloadTag = "demo",
                }, TimeSpan.FromSeconds(120), cancellationToken).ConfigureAwait(false);
                var s = answer.Stats;
                Console.WriteLine();
                Console.WriteLine($"[{edge}] {domain} prompt: {Printable(prompt)}");
                Console.WriteLine($"[{edge}] answer: {Printable(answer.Text)}");
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"[{edge}] {answer.TokenIds.Count} tokens in {s.LatencyMs:F0} ms; expert calls local {s.LocalExpertCalls}, remote {s.RemoteExpertCalls} "
                    + $"({(double)s.LocalExpertCalls / Math.Max(1, s.LocalExpertCalls + s.RemoteExpertCalls):P0} local) in {s.RemoteBatches} batches, {s.RemoteBytes / 1024.0:F0} KiB over the bus"));
            }

            var rows = await WaitForEdgesAsync(membership.Services.GetRequiredService<IDbContextFactory<DanceMoEDbContext>>(), requests.Count, cancellationToken).ConfigureAwait(false);
            Console.WriteLine();
            foreach (var row in rows)
            {
                Console.WriteLine($"[demo] edge_servers: {row.Id} provider={row.ExecutionProvider} budget={row.MemoryBudgetBytes >> 20} MiB used={row.MemoryUsedBytes / 1048576.0:F1} MiB last_seen={row.LastSeenAt:HH:mm:ss}");
            }
        }
        finally
        {
            if (startedHere && !keep)
            {
                await ClusterCommand.DownAsync(CancellationToken.None).ConfigureAwait(false);
                Console.WriteLine("[demo] cluster stopped (--keep leaves it running)");
            }

            await membership.StopAsync(CancellationToken.None).ConfigureAwait(false);
        }

        Console.WriteLine($"[demo] done in {clock.Elapsed.TotalSeconds:F1} s. Query the history: psql \"{CliEnvironment.PostgresUrl}\" -c 'select * from edge_servers'");
        return ExitCodes.Ok;
    }

    private static string Printable(string text) =>
        new(text.Select(c => char.IsControl(c) && c != ' ' ? (c == '\n' ? '↵' : '.') : c).ToArray());

    /// <summary>Records the edges' heartbeats in edge_servers, as the coordinator will.</summary>
    private static async Task<IHost> StartMembershipAsync(CancellationToken cancellationToken)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Services.AddDanceMoEConnections(builder.Configuration);
        builder.Services.AddDanceMoEDatabase(builder.Configuration);
        builder.Services.AddClusterMembership(builder.Configuration);
        builder.Services.AddMassTransit(bus =>
        {
            bus.AddConsumer<EdgeHeartbeatConsumer, EdgeHeartbeatConsumerDefinition>();
            bus.UsingRabbitMq((context, cfg) =>
            {
                context.GetRequiredService<IOptions<RabbitMqOptions>>().Value.ConfigureHost(cfg);
                cfg.ConfigureEndpoints(context);
            });
        });
        builder.Services.Configure<MassTransitHostOptions>(o =>
        {
            o.WaitUntilStarted = true;
            o.StartTimeout = TimeSpan.FromSeconds(30);
            o.StopTimeout = TimeSpan.FromSeconds(10);
        });

        var host = builder.Build();
        try
        {
            await host.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is RabbitMqConnectionException or TimeoutException or OptionsValidationException)
        {
            host.Dispose();
            throw new CliException($"cannot start the bus on {DbCommand.Redact(CliEnvironment.RabbitMqUri)}: {ex.Message}", ExitCodes.Unavailable, ex);
        }

        return host;
    }

    private static async Task StartServicesAsync(CancellationToken cancellationToken)
    {
        var script = Path.Combine(CliEnvironment.RepositoryRoot, "scripts", "services.sh");
        using var process = Process.Start(new ProcessStartInfo(script, "up") { UseShellExecute = false })
            ?? throw new CliException($"cannot run {script}");
        await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        if (process.ExitCode != 0)
        {
            throw new CliException($"services up failed (exit {process.ExitCode}); see the messages above", ExitCodes.Unavailable);
        }
    }

    /// <summary>
    /// One request per domain of the model's held-out samples (the trained default model has four), each
    /// sent to its own edge: edge i serves domain i. A model without samples gets three fixed prompts.
    /// </summary>
    private static List<(string Edge, string Domain, string Prompt)> DemoRequests(string? model)
    {
        var checkpoint = model ?? ModelCatalog.DefaultCheckpoint;
        var domains = Directory.Exists(Path.Combine(checkpoint, HeldOutTrace.Folder)) ? HeldOutTrace.Domains(checkpoint) : [];
        if (domains.Count == 0)
        {
            return [.. FallbackPrompts.Select((p, i) => ($"edge-{i + 1}", "sample", p))];
        }

        return [.. domains.Select((domain, i) =>
        {
            var text = System.Text.Encoding.UTF8.GetString(HeldOutTrace.Sample(checkpoint, domain, 400));
            var lines = text.Split('\n').Select(l => l.Trim()).Where(l => l.Length >= 12).ToList();
            var prompt = System.Text.RegularExpressions.Regex.Replace(string.Join(" ", lines), @"\s+", " ");
            return ($"edge-{i + 1}", domain, prompt[..Math.Min(prompt.Length, 72)]);
        })];
    }

    private static async Task<List<EdgeServer>> WaitForEdgesAsync(IDbContextFactory<DanceMoEDbContext> dbFactory, int edges, CancellationToken cancellationToken)
    {
        var since = DateTimeOffset.UtcNow.AddSeconds(-10);
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (DateTime.UtcNow < deadline)
        {
            await using var db = await dbFactory.CreateDbContextAsync(cancellationToken).ConfigureAwait(false);
            var rows = await db.EdgeServers.AsNoTracking().Where(e => e.LastSeenAt >= since).OrderBy(e => e.Id).ToListAsync(cancellationToken).ConfigureAwait(false);
            if (rows.Count >= edges)
            {
                return rows;
            }

            await Task.Delay(200, cancellationToken).ConfigureAwait(false);
        }

        throw new CliException("the edges' heartbeats did not reach edge_servers within 30 s");
    }
}
