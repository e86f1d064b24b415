using System.CommandLine;
using System.Globalization;
using DanceMoE.Cli.Verbs;
using DanceMoE.Coordinator;
using DanceMoE.Coordinator.Saga;
using DanceMoE.Hosting;
using DanceMoE.Model;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace DanceMoE.Cli.Commands;

/// <summary><c>dancemoe coordinator</c>: membership, placement registry, the Quartz placement job and the migration saga, until stopped.</summary>
public static class CoordinatorCommand
{
    /// <summary>The <c>coordinator</c> verb, whose flags are the coordinator host's (<see cref="CoordinatorConfiguration"/>); the defaults are the options classes' own.</summary>
    public static Command Create()
    {
        var job = new PlacementJobOptions();
        var membership = new MembershipOptions();
        var migration = new MigrationOptions();
        var model = CliOptions.Text("model", "exported model whose architecture the placement job plans for", valueName: "DIR");
        var readyFile = CliOptions.Text("ready-file", "file to write the process id to once the coordinator serves", valueName: "FILE");
        var command = new Command("coordinator", "membership, placement registry, the placement job and the migration saga, until stopped (--model DIR, or --layers, --experts, --top-k and --expert-bytes)")
        {
            model,
            CliOptions.OptionalInt("layers", "MoE layers (instead of --model)", 1, 4096),
            CliOptions.OptionalInt("experts", "experts per layer (instead of --model)", 1, short.MaxValue + 1),
            CliOptions.OptionalInt("top-k", "experts per token (instead of --model)", 1, 1024),
            CliOptions.OptionalLong("expert-bytes", "bytes of one expert's weights (instead of --model)", 1),
            CliOptions.Text("algorithm", "placement algorithm: dancemoe, optimal, eplb, redundance, uniform or latency", job.Algorithm),
            CliOptions.Text("cron", "Quartz cron schedule of the placement job", job.Cron),
            CliOptions.Double("window-minutes", job.WindowMinutes, "routing history the job reads", 1, 7 * 24 * 60),
            CliOptions.Double("half-life-minutes", job.HalfLifeMinutes, "half-life of older routing events (0: no decay)", 0, 7 * 24 * 60),
            CliOptions.Int("sample-requests", job.SampleRequests, "recent requests whose routing latency plans for", 1, 100_000),
            CliOptions.Double("solve-seconds", job.SolveSeconds, "time budget of one solve (latency returns its best so far)", 0.1, 3600),
            CliOptions.Double("horizon-s", job.HorizonSeconds, "time over which a migration must pay for itself", 1, 7 * 24 * 3600),
            CliOptions.Double("bandwidth-mbps", job.BandwidthMbps, "link bandwidth the planner assumes", 0.001, 1e6),
            CliOptions.Double("rtt-ms", job.RttMs, "link round-trip time the planner assumes", 0, 10_000),
            CliOptions.Double("heartbeat-seconds", membership.HeartbeatSeconds, "edges' heartbeat interval", 0.1, 3600),
            CliOptions.Int("missed-heartbeats", membership.MissedHeartbeats, "missed heartbeats before an edge is down", 1, 1000),
            CliOptions.Double("load-timeout-s", migration.LoadTimeoutSeconds, "how long an edge may take to load its experts", 0.1, 3600),
            CliOptions.Double("unload-timeout-s", migration.UnloadTimeoutSeconds, "how long an edge may take to unload", 0.1, 3600),
            CliOptions.Double("activation-timeout-s", migration.ActivationTimeoutSeconds, "how long the edges may take to switch placement", 0.1, 3600),
            CliOptions.Double("drain-ms", migration.DrainMilliseconds, "wait for requests in flight before unloading", 0, 600_000),
            CliOptions.Int("migration-retries", migration.Retries, "retries of a failed migration step", 0, 10),
            CliOptions.Int("timeout-scan-ms", migration.TimeoutScanMilliseconds, "how often the saga looks for timed-out migrations", 50, 60_000),
            CliOptions.OptionalInt("metrics-port", "serve /metrics, /healthz and /readyz over HTTP on this port (default: none)", 1, 65535),
            CliOptions.Text("metrics-host", "address the metrics listener binds (* for every interface)", "127.0.0.1"),
            readyFile,
        };
        command.SetAction((result, cancellationToken) =>
        {
            var flags = CliOptions.Given(result, command.Options.Where(option => option != model && option != readyFile));
            return RunAsync(Configuration(flags, result.GetValue(model)), result.GetValue(readyFile), cancellationToken);
        });
        return command;
    }

    /// <summary>The configuration the coordinator host builds from the same <paramref name="flags"/> and the model, exported if need be.</summary>
    private static IConfiguration Configuration(List<string> flags, string? modelDir)
    {
        try
        {
            if (modelDir is not null)
            {
                flags.Add("--model=" + ModelCatalog.ResolveExported(modelDir, Console.Error.WriteLine));
            }

            return CoordinatorConfiguration.FromCommandLine([.. flags]).WithLocalServices(BusRole.Coordinator);
        }
        catch (Exception ex) when (ex is ModelFormatException or FileNotFoundException or DirectoryNotFoundException)
        {
            throw new CliException($"cannot read the model manifest in {modelDir}: {ex.Message}", ExitCodes.Failed, ex);
        }
        catch (HostFlagException ex)
        {
            throw new UsageException(ex.Message);
        }
    }

    private static async Task<int> RunAsync(IConfiguration configuration, string? readyFile, CancellationToken cancellationToken)
    {
        using var host = BuildHost(configuration);
        try
        {
            await host.StartCoordinatorAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (HostStartupException ex) when (ex.Failure == HostStartupFailure.InvalidOption)
        {
            throw new UsageException(ex.Message);
        }
        catch (HostStartupException ex)
        {
            var hint = ex.Failure == HostStartupFailure.BrokerUnreachable ? " (is it up? ./dancemoe services up)" : "";
            throw new CliException(ex.Message + hint, ex.ExitCode, ex);
        }

        if (readyFile is not null)
        {
            await File.WriteAllTextAsync(readyFile, Environment.ProcessId.ToString(CultureInfo.InvariantCulture), CancellationToken.None).ConfigureAwait(false);
        }

        var job = host.Services.GetRequiredService<IOptions<PlacementJobOptions>>().Value;
        Console.Error.WriteLine(
            $"dancemoe coordinator: serving queue {RunPlacementNowConsumerDefinition.Queue}; placement job '{job.Algorithm}' on cron '{job.Cron}' ({job.Layers} layers x {job.Experts} experts)");
        await host.WaitForShutdownAsync(cancellationToken).ConfigureAwait(false);
        return ExitCodes.Ok;
    }

    private static IHost BuildHost(IConfiguration configuration)
    {
        try
        {
            return CoordinatorHost.Build(configuration);
        }
        catch (InvalidOperationException ex) when (CoordinatorHost.IsUnconvertibleSetting(ex))
        {
            throw new UsageException(ex.Message);
        }
    }
}
