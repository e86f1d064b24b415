using System.Diagnostics;
using DanceMoE.Contracts;
using DanceMoE.Coordinator;
using DanceMoE.Data;
using DanceMoE.Hosting;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DanceMoE.Cli.Commands;

/// <summary>
/// <c>dancemoe demo</c>: the main job. Today it shows the wiring end to end: services up, migrations
/// applied, an edge heartbeat through RabbitMQ, recorded as a row in PostgreSQL.
/// </summary>
public sealed class DemoCommand : ICliCommand
{
    public string Verb => "demo";

    public string Usage => "demo [--no-services]                  services up, migrate, one message through the bus into the database";

    public async Task<int> RunAsync(Arguments args, CancellationToken cancellationToken)
    {
        var noServices = args.Flag("no-services");
        args.EnsureAllUsed(0);
        var clock = Stopwatch.StartNew();

        if (!noServices)
        {
            await StartServicesAsync(cancellationToken).ConfigureAwait(false);
        }

        var migration = await DbCommand.MigrateAsync(CliEnvironment.PostgresUrl, TimeSpan.FromSeconds(30), cancellationToken).ConfigureAwait(false);
        Console.WriteLine($"[demo] database migrated ({migration.AllApplied.Count} migrations, {migration.Applied.Count} new)");

        var builder = Host.CreateApplicationBuilder();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Services.AddDanceMoEConnections(builder.Configuration);
        builder.Services.AddDanceMoEDatabase(builder.Configuration);
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

        using var host = builder.Build();
        try
        {
            await host.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is RabbitMqConnectionException or TimeoutException or OptionsValidationException)
        {
            throw new CliException($"cannot start the bus on {DbCommand.Redact(CliEnvironment.RabbitMqUri)}: {ex.Message}", ExitCodes.Unavailable, ex);
        }

        var heartbeat = new EdgeHeartbeat
        {
            EdgeId = "demo-edge",
            MemoryBudgetBytes = 256L << 20,
            ExecutionProvider = "cpu",
            ComputeClass = Environment.MachineName,
            SentAt = DateTimeOffset.UtcNow,
        };
        var sent = Stopwatch.StartNew();
        await host.Services.GetRequiredService<IBus>().Publish(heartbeat, cancellationToken).ConfigureAwait(false);
        Console.WriteLine($"[demo] published EdgeHeartbeat for {heartbeat.EdgeId} on {DbCommand.Redact(CliEnvironment.RabbitMqUri)}");

        var row = await WaitForRowAsync(host.Services.GetRequiredService<IDbContextFactory<DanceMoEDbContext>>(), heartbeat, cancellationToken).ConfigureAwait(false);
        Console.WriteLine($"[demo] row in edge_servers after {sent.Elapsed.TotalMilliseconds:F0} ms: id={row.Id} provider={row.ExecutionProvider} budget={row.MemoryBudgetBytes >> 20} MiB last_seen={row.LastSeenAt:O}");
        await host.StopAsync(CancellationToken.None).ConfigureAwait(false);
        Console.WriteLine($"[demo] done in {clock.Elapsed.TotalSeconds:F1} s. Query it: psql \"{CliEnvironment.PostgresUrl}\" -c 'select * from edge_servers'");
        return ExitCodes.Ok;
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

    private static async Task<EdgeServer> WaitForRowAsync(IDbContextFactory<DanceMoEDbContext> dbFactory, EdgeHeartbeat heartbeat, CancellationToken cancellationToken)
    {
        // PostgreSQL keeps microseconds; the heartbeat carries 100 ns ticks.
        var since = heartbeat.SentAt.AddMilliseconds(-1);
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (DateTime.UtcNow < deadline)
        {
            await using var db = await dbFactory.CreateDbContextAsync(cancellationToken).ConfigureAwait(false);
            var row = await db.EdgeServers.AsNoTracking()
                .FirstOrDefaultAsync(e => e.Id == heartbeat.EdgeId && e.LastSeenAt >= since, cancellationToken).ConfigureAwait(false);
            if (row is not null)
            {
                return row;
            }

            await Task.Delay(100, cancellationToken).ConfigureAwait(false);
        }

        throw new CliException("the heartbeat did not reach edge_servers within 30 s: is the consumer running? see the RabbitMQ management UI");
    }
}
