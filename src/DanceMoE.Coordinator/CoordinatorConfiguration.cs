using DanceMoE.Coordinator.Saga;
using DanceMoE.Hosting;
using DanceMoE.Model;
using Microsoft.Extensions.Configuration;

namespace DanceMoE.Coordinator;

/// <summary>
/// The coordinator's flags and the configuration keys they set, shared by the coordinator host and
/// <c>dancemoe coordinator</c>, and the placement job's model shape read from an exported model.
/// </summary>
public static class CoordinatorConfiguration
{
    /// <summary>The exported model directory (<c>--model</c>) whose shape the placement job plans for.</summary>
    public const string ModelKey = "Model:Directory";

    /// <summary>Each flag (<c>--layers</c>) and the key it sets (<c>PlacementJob:Layers</c>), for <c>AddCommandLine</c>.</summary>
    public static IReadOnlyDictionary<string, string> SwitchMappings { get; } = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["--model"] = ModelKey,
        ["--layers"] = $"{PlacementJobOptions.Section}:{nameof(PlacementJobOptions.Layers)}",
        ["--experts"] = $"{PlacementJobOptions.Section}:{nameof(PlacementJobOptions.Experts)}",
        ["--top-k"] = $"{PlacementJobOptions.Section}:{nameof(PlacementJobOptions.TopK)}",
        ["--expert-bytes"] = $"{PlacementJobOptions.Section}:{nameof(PlacementJobOptions.ExpertBytes)}",
        ["--algorithm"] = $"{PlacementJobOptions.Section}:{nameof(PlacementJobOptions.Algorithm)}",
        ["--cron"] = $"{PlacementJobOptions.Section}:{nameof(PlacementJobOptions.Cron)}",
        ["--window-minutes"] = $"{PlacementJobOptions.Section}:{nameof(PlacementJobOptions.WindowMinutes)}",
        ["--half-life-minutes"] = $"{PlacementJobOptions.Section}:{nameof(PlacementJobOptions.HalfLifeMinutes)}",
        ["--sample-requests"] = $"{PlacementJobOptions.Section}:{nameof(PlacementJobOptions.SampleRequests)}",
        ["--solve-seconds"] = $"{PlacementJobOptions.Section}:{nameof(PlacementJobOptions.SolveSeconds)}",
        ["--horizon-s"] = $"{PlacementJobOptions.Section}:{nameof(PlacementJobOptions.HorizonSeconds)}",
        ["--bandwidth-mbps"] = $"{PlacementJobOptions.Section}:{nameof(PlacementJobOptions.BandwidthMbps)}",
        ["--rtt-ms"] = $"{PlacementJobOptions.Section}:{nameof(PlacementJobOptions.RttMs)}",
        ["--heartbeat-seconds"] = $"{MembershipOptions.Section}:{nameof(MembershipOptions.HeartbeatSeconds)}",
        ["--missed-heartbeats"] = $"{MembershipOptions.Section}:{nameof(MembershipOptions.MissedHeartbeats)}",
        ["--load-timeout-s"] = $"{MigrationOptions.Section}:{nameof(MigrationOptions.LoadTimeoutSeconds)}",
        ["--unload-timeout-s"] = $"{MigrationOptions.Section}:{nameof(MigrationOptions.UnloadTimeoutSeconds)}",
        ["--activation-timeout-s"] = $"{MigrationOptions.Section}:{nameof(MigrationOptions.ActivationTimeoutSeconds)}",
        ["--drain-ms"] = $"{MigrationOptions.Section}:{nameof(MigrationOptions.DrainMilliseconds)}",
        ["--migration-retries"] = $"{MigrationOptions.Section}:{nameof(MigrationOptions.Retries)}",
        ["--timeout-scan-ms"] = $"{MigrationOptions.Section}:{nameof(MigrationOptions.TimeoutScanMilliseconds)}",
        ["--metrics-port"] = "Metrics:Port",
        ["--metrics-host"] = "Metrics:Host",
    };

    /// <summary>
    /// The host's configuration: environment variables, then the shape of the model named by <c>--model</c> (or
    /// <c>Model__Directory</c>), then the flags, each overriding the one before.
    /// </summary>
    /// <exception cref="ModelFormatException">The model directory holds no valid exported model.</exception>
    /// <exception cref="HostFlagException">A flag the coordinator does not know, or one without its value.</exception>
    public static IConfiguration FromCommandLine(string[] args)
    {
        HostFlags.Check(args, SwitchMappings);
        var environment = new ConfigurationBuilder().AddEnvironmentVariables().Build();
        var flags = new ConfigurationBuilder().AddCommandLine(args, SwitchMappings.ToDictionary(m => m.Key, m => m.Value, StringComparer.Ordinal)).Build();
        var model = flags[ModelKey] ?? environment[ModelKey];
        var configuration = new ConfigurationBuilder()
            .AddConfiguration(environment)
            .AddInMemoryCollection(model is null ? [] : ModelShape.Of(ModelManifest.Load(model)).PlacementJobSettings())
            .AddConfiguration(flags)
            .Build();
        var job = configuration.GetSection(PlacementJobOptions.Section);
        if (job[nameof(PlacementJobOptions.Layers)] is null && job[nameof(PlacementJobOptions.Experts)] is null)
        {
            throw new HostFlagException("no model to plan for: give --model DIR (Model__Directory), or --layers, --experts, --top-k and --expert-bytes");
        }

        return configuration;
    }

}
