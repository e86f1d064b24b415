using DanceMoE.Hosting;
using Microsoft.Extensions.Configuration;

namespace DanceMoE.Edge;

/// <summary>The flags of an edge process (<c>dancemoe edge</c> and the edge host), each mapped to its configuration key.</summary>
public static class EdgeCommandLine
{
    /// <summary>Flag to configuration key; <c>--no-traces</c> is <c>--traces false</c>, <c>--expert-metrics</c> is <c>--expert-metrics true</c>.</summary>
    public static IReadOnlyDictionary<string, string> Switches => SwitchMappings;

    private static readonly Dictionary<string, string> SwitchMappings = new(StringComparer.Ordinal)
    {
        ["--id"] = "Edge:Id",
        ["--model"] = "Edge:ModelDirectory",
        ["--memory-mb"] = "Edge:MemoryMb",
        ["--placement"] = "Edge:PlacementFile",
        ["--uniform-over"] = "Edge:UniformOver",
        ["--provider"] = "Edge:Provider",
        ["--compute-class"] = "Edge:ComputeClass",
        ["--threads"] = "Edge:IntraOpThreads",
        ["--deadline-ms"] = "Edge:ExpertDeadlineMs",
        ["--expert-concurrency"] = "Edge:ExpertConcurrency",
        ["--max-active"] = "Edge:MaxActive",
        ["--max-waiting"] = "Edge:MaxWaiting",
        ["--max-step-tokens"] = "Edge:MaxStepTokens",
        ["--max-prompt-tokens"] = "Edge:MaxPromptTokens",
        ["--replay-trace"] = "Edge:ReplayTrace",
        ["--load-ms-per-mb"] = "Edge:LoadMsPerMb",
        ["--heartbeat-seconds"] = "Edge:HeartbeatSeconds",
        ["--ready-file"] = "Edge:ReadyFile",
        ["--link-delay-ms"] = "Edge:Link:DelayMs",
        ["--link-mbps"] = "Edge:Link:Mbps",
        ["--traces"] = "Edge:Traces:Enabled",
        ["--trace-spill-dir"] = "Edge:Traces:SpillDirectory",
        ["--expert-metrics"] = "Edge:ExpertMetrics",
        ["--metrics-port"] = "Metrics:Port",
        ["--metrics-host"] = "Metrics:Host",
    };

    /// <summary>An edge process's configuration: its command line over the environment (<c>Edge__Id</c>, <c>ConnectionStrings__rabbitmq</c>, ...).</summary>
    /// <exception cref="HostFlagException">A flag the edge does not know, or one without its value.</exception>
    public static IConfiguration Build(IReadOnlyList<string> args)
    {
        HostFlags.Check(args, SwitchMappings, "--no-traces", "--expert-metrics");
        // The command-line provider reads every flag as a key and a value; the flags without a value get theirs here.
        var withValues = args.Select(a => a switch { "--no-traces" => "--traces=false", "--expert-metrics" => "--expert-metrics=true", _ => a }).ToArray();
        return new ConfigurationBuilder().AddEnvironmentVariables().AddCommandLine(withValues, SwitchMappings).Build();
    }
}
