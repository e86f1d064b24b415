namespace DanceMoE.EndToEndTests;

/// <summary>What an edge's log says from its start to a clean stop.</summary>
public sealed class EdgeShutdownTests
{
    [Fact]
    public async Task An_edge_started_and_stopped_by_sigterm_logs_no_fault_or_exception()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 53);
        var architecture = cluster.Manifest.Architecture;
        var placement = cluster.WritePlacement("one.json", Edge.PlacementFile.Uniform(1, architecture.NumLayers, architecture.NumExperts, ["edge-1"]));
        // Heartbeats close together: one that went out while the bus starts or stops would be cancelled and logged as a fault.
        await cluster.StartEdgesAsync(["edge-1"], placement, extraArguments: ["--heartbeat-seconds", "0.25"]);
        await Task.Delay(TimeSpan.FromSeconds(2));

        await cluster.TerminateAsync("edge-1");

        // The whole log on failure: a line's neighbours say what the edge was doing.
        var log = cluster.LogOf("edge-1");
        Assert.Contains("SIGTERM", log, StringComparison.Ordinal);
        Assert.False(log.Contains("fail:", StringComparison.Ordinal), log);
        Assert.False(log.Contains("FAULT", StringComparison.Ordinal), log);
        Assert.False(log.Contains("Exception", StringComparison.Ordinal), log);
        Assert.False(log.Contains("heartbeat not", StringComparison.Ordinal), log);
    }
}
