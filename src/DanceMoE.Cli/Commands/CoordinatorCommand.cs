using System.Globalization;
using DanceMoE.Coordinator;
using DanceMoE.Model;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace DanceMoE.Cli.Commands;

/// <summary><c>dancemoe coordinator</c>: membership, placement registry, the Quartz placement job and the migration saga, until stopped.</summary>
public sealed class CoordinatorCommand : ICliCommand
{
    public string Verb => "coordinator";

    public string Usage =>
        "coordinator (--model DIR | --layers L --experts E --top-k K --expert-bytes B) [--algorithm dancemoe|optimal|eplb|redundance|uniform] "
        + "[--cron '0 0/5 * * * ?'] [--window-minutes 30] [--half-life-minutes 10] [--horizon-s 300] [--bandwidth-mbps 500] [--rtt-ms 2] "
        + "[--heartbeat-seconds 2] [--missed-heartbeats 3] [--load-timeout-s 60] [--unload-timeout-s 30] [--activation-timeout-s 30] [--drain-ms 1000] "
        + "[--migration-retries 1] [--timeout-scan-ms 500] [--ready-file FILE]";

    public async Task<int> RunAsync(Arguments args, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        var settings = new Dictionary<string, string?>(StringComparer.Ordinal);
        if (args.Option("model") is { } modelDir)
        {
            try
            {
                settings = ModelShape.Of(ModelManifest.Load(ModelCatalog.ResolveExported(modelDir, Console.Error.WriteLine))).PlacementJobSettings();
            }
            catch (Exception ex) when (ex is ModelFormatException or FileNotFoundException or DirectoryNotFoundException)
            {
                throw new CliException($"cannot read the model manifest in {modelDir}: {ex.Message}", ExitCodes.Failed, ex);
            }
        }

        foreach (var (flag, key) in CoordinatorConfiguration.SwitchMappings)
        {
            if (key != CoordinatorConfiguration.ModelKey && args.Option(flag[2..]) is { } value)
            {
                settings[key] = value;
            }
        }

        var readyFile = args.Option("ready-file");
        args.EnsureAllUsed(0);

        var configuration = new ConfigurationBuilder().AddConfiguration(CliEnvironment.Configuration).AddInMemoryCollection(settings).Build();
        using var host = BuildHost(configuration);
        try
        {
            await host.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OptionsValidationException ex)
        {
            throw new UsageException(string.Join("; ", ex.Failures));
        }
        catch (InvalidOperationException ex) when (IsConversionFailure(ex))
        {
            throw new UsageException(ex.Message);
        }
        catch (Exception ex) when (ex is MassTransit.RabbitMqConnectionException or TimeoutException)
        {
            throw new CliException($"the coordinator cannot start its bus: {ex.Message} (is it up? ./dancemoe services up)", ExitCodes.Unavailable, ex);
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
        catch (InvalidOperationException ex) when (IsConversionFailure(ex))
        {
            throw new UsageException(ex.Message);
        }
    }

    /// <summary>A setting that does not convert to its option's type (for example <c>--drain-ms abc</c>): the caller's mistake.</summary>
    private static bool IsConversionFailure(InvalidOperationException ex) =>
        ex.Message.StartsWith("Failed to convert configuration value", StringComparison.Ordinal);
}
