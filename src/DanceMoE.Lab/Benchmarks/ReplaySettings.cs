using System.Globalization;
using DanceMoE.Operations;
using DanceMoE.Placement;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>One flag of <c>bench replay</c>: its name, default (null: none), help and whether it takes no value.</summary>
public sealed record ReplayFlag(string Name, string? Default, string Description, bool Switch = false, bool Required = false);

/// <summary>What <c>bench replay</c> runs.</summary>
public sealed record ReplayBenchmarkSettings
{
    public const string Summary =
        "ESFT-4 through real edges: each placement computed from the history, installed through the coordinator's registry and replayed "
        + "on held-out requests with their recorded routing; measured latency next to the simulator's, calibrated from the same run";

    public static IReadOnlyList<ReplayFlag> Flags { get; } =
    [
        new("history", null, "routing traces the placements are computed from (SERVER.layerNN.txt)", Required: true),
        new("eval", null, "routing traces replayed (default: the second half of --history)"),
        new("servers", "intent,law,summary,translation", "one edge per workload domain, named as in the trace files"),
        new("memory", "0.3", "share of all experts' bytes (DeepSeek-V2-Lite's 17.3 MB each) each edge holds"),
        new("memory-mb", null, "each edge's budget in MB, 0.001 to 1000000, one per edge (instead of --memory)"),
        new("algorithms", "eplb,dancemoe,latency", "placements to replay, comma-separated (uniform, eplb, dancemoe, optimal, latency)"),
        new("link-delay-ms", "1", "emulated one-way delay of every expert batch and answer"),
        new("link-mbps", "500", "emulated bandwidth of each edge's link"),
        new("requests-per-server", "3", "held-out requests each edge replays (its domain's first ones)"),
        new("repeats", "2", "passes over every request and placement, one after another; a request's fastest attempt under a placement counts (the machine is shared: others' work only adds time)"),
        new("decode-tokens", "16", "the last this-many tokens of a request are decoded one by one; the rest is its prompt"),
        new("message-ms", "1.6", "the bus's cost per message the placements are planned with, over this machine's cores (placement simulate's; fitted here on eplb: 6.1 to 9.1)"),
        new("message-mb-ms", "0", "the bus's cost per MB a message carries that the placements are planned with (fitted here on eplb: 7.2 to 33.5)"),
        new("no-replan", null, "plan latency with --message-ms and --message-mb-ms only, not again with the bus fitted on eplb's first round", Switch: true),
        new("plot", null, "also draw measured and modelled latency per algorithm to this PNG"),
        new("keep-logs", null, "keep the processes' logs", Switch: true),
        new("json", null, "print a JSON array, one object per algorithm", Switch: true),
    ];

    public string History { get; init; } = "";
    public string? Eval { get; init; }
    public IReadOnlyList<string> Servers { get; init; } = ["intent", "law", "summary", "translation"];
    public double Memory { get; init; } = 0.3;
    public IReadOnlyList<double>? MemoryMb { get; init; }
    public IReadOnlyList<string> Algorithms { get; init; } = [PlacementAlgorithms.Eplb, PlacementAlgorithms.DanceMoe, PlacementAlgorithms.Latency];
    public double LinkDelayMs { get; init; } = 1;
    public double LinkMbps { get; init; } = 500;
    public int RequestsPerServer { get; init; } = 3;
    public int DecodeTokens { get; init; } = 16;
    public int Repeats { get; init; } = 2;
    public double MessageMs { get; init; } = 1.6;
    public double MessageMbMs { get; init; }
    public bool Replan { get; init; } = true;
    public string? Plot { get; init; }
    public bool KeepLogs { get; init; }
    public bool Json { get; init; }

    /// <summary>Settings from the flags' values (name without dashes to value; a switch given is "true").</summary>
    public static ReplayBenchmarkSettings Parse(IReadOnlyDictionary<string, string?> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        string? Get(string name) => values.TryGetValue(name, out var v) && !string.IsNullOrWhiteSpace(v) ? v : null;
        double Number(string name, double min, double max)
        {
            var text = Get(name) ?? Flags.Single(f => f.Name == name).Default!;
            return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v >= min && v <= max
                ? v
                : throw new InvalidSettingsException($"--{name} must be a number from {min} to {max} (got '{text}')");
        }

        // A count given as 1.5 would be cut to 1 without a word.
        int Whole(string name, int min, int max)
        {
            var text = Get(name) ?? Flags.Single(f => f.Name == name).Default!;
            return int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v >= min && v <= max
                ? v
                : throw new InvalidSettingsException($"--{name} must be a whole number from {min} to {max} (got '{text}')");
        }

        IReadOnlyList<string> List(string text) => text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (Get("memory-mb") is not null && Get("memory") is not null)
        {
            throw new InvalidSettingsException("give --memory or --memory-mb, not both");
        }

        var servers = List(Get("servers") ?? Flags.Single(f => f.Name == "servers").Default!);
        var memoryMb = Get("memory-mb") is { } mb
            ? List(mb).Select(m => double.TryParse(m, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v >= 0.001 && v <= 1e6 ? v : throw new InvalidSettingsException($"--memory-mb: '{m}' is not a number from 0.001 to 1000000")).ToList()
            : null;
        if (memoryMb is not null && memoryMb.Count != servers.Count)
        {
            throw new InvalidSettingsException($"--memory-mb has {memoryMb.Count} budgets for {servers.Count} servers");
        }

        IReadOnlyList<string> algorithms;
        try
        {
            algorithms = PlacementAlgorithms.Chosen(List(Get("algorithms") ?? Flags.Single(f => f.Name == "algorithms").Default!));
        }
        catch (ArgumentException ex)
        {
            throw new InvalidSettingsException($"--algorithms: {ex.Message}");
        }

        OutputPaths.CheckFile("--plot", Get("plot"));
        return new ReplayBenchmarkSettings
        {
            History = Get("history") ?? throw new InvalidSettingsException("--history is required"),
            Eval = Get("eval"),
            Servers = servers.Count >= 2 ? servers : throw new InvalidSettingsException("--servers needs at least two domains"),
            Memory = Number("memory", 0.0001, 1),
            MemoryMb = memoryMb,
            Algorithms = algorithms.Count > 0 ? algorithms : throw new InvalidSettingsException("--algorithms is empty"),
            LinkDelayMs = Number("link-delay-ms", 0, 1000),
            LinkMbps = Number("link-mbps", 1, 1e6),
            RequestsPerServer = Whole("requests-per-server", 1, 1000),
            DecodeTokens = Whole("decode-tokens", 0, 1024),
            Repeats = Whole("repeats", 1, 20),
            MessageMs = Number("message-ms", 0, 1000),
            MessageMbMs = Number("message-mb-ms", 0, 1e6),
            Replan = Get("no-replan") is null,
            Plot = Get("plot"),
            KeepLogs = Get("keep-logs") is not null,
            Json = Get("json") is not null,
        };
    }
}
