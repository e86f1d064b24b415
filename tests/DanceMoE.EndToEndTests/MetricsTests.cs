using System.Diagnostics;
using System.Globalization;
using System.Net;
using DanceMoE.Contracts;
using DanceMoE.Edge;
using DanceMoE.Hosting.Metrics;
using DanceMoE.IntegrationTests;

namespace DanceMoE.EndToEndTests;

/// <summary>Two real edge processes with <c>--metrics-port</c>; edge-1 also with <c>--expert-metrics</c>.</summary>
public sealed class MetricsClusterFixture : IAsyncLifetime
{
    public static readonly string[] Edges = ["edge-1", "edge-2"];

    public EdgeCluster Cluster { get; private set; } = null!;

    public Dictionary<string, int> Ports { get; } = [];

    public async Task InitializeAsync()
    {
        Cluster = await EdgeCluster.CreateAsync(seed: 23);
        var architecture = Cluster.Manifest.Architecture;
        var placement = Cluster.WritePlacement("uniform.json", PlacementFile.Uniform(1, architecture.NumLayers, architecture.NumExperts, Edges));
        foreach (var id in Edges)
        {
            Ports[id] = TestPorts.Free();
            string[] extra = ["--metrics-port", Ports[id].ToString(CultureInfo.InvariantCulture), .. id == "edge-1" ? ["--expert-metrics"] : Array.Empty<string>()];
            await Cluster.StartEdgesAsync([id], placement, extraArguments: extra);
        }
    }

    public async Task DisposeAsync() => await Cluster.DisposeAsync();
}

public sealed class MetricsTests(MetricsClusterFixture fixture) : IClassFixture<MetricsClusterFixture>
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(20) };

    private EdgeCluster Cluster => fixture.Cluster;

    [Fact]
    public async Task Counters_move_by_what_the_answers_report()
    {
        var before = await ScrapeAsync("edge-1");
        var peerBefore = await ScrapeAsync("edge-2");
        var answers = new List<TextGenerated>();
        foreach (var prompt in new[] { "metrics count every request", "and every token", "def f(x):\n    return x" })
        {
            answers.Add(await Cluster.GenerateAsync("edge-1", prompt, 6));
        }

        var after = await ScrapeAsync("edge-1");
        var peerAfter = await ScrapeAsync("edge-2");

        double Delta(string series) => Value(after, series) - Value(before, series);
        Assert.Equal(3, Delta("dancemoe_requests_total{status=\"completed\"}"));
        Assert.Equal(answers.Sum(a => a.TokenIds.Count), Delta("dancemoe_generated_tokens_total"));
        Assert.Equal(answers.Sum(a => a.Stats.LocalExpertCalls), Delta("dancemoe_expert_calls_total{locality=\"local\"}"));
        Assert.Equal(answers.Sum(a => a.Stats.RemoteExpertCalls), Delta("dancemoe_expert_calls_total{locality=\"remote\"}"));
        Assert.True(answers.Sum(a => a.Stats.RemoteExpertCalls) > 0, "nothing was distributed");
        Assert.Equal(3, Delta("dancemoe_request_duration_seconds_count"));
        Assert.Equal(answers.Count(a => a.TokenIds.Count > 0), Delta("dancemoe_time_to_first_token_seconds_count"));
        Assert.Equal(answers.Sum(a => Math.Max(0, a.TokenIds.Count - 1)), Delta("dancemoe_time_per_output_token_seconds_count"));
        Assert.True(Delta("dancemoe_peer_round_trip_seconds_count{peer=\"edge-2\"}") >= answers.Sum(a => a.Stats.RemoteBatches) - 0.5);
        // The bodies on the bus: every batch's and answer's tensor (what the answers count) and a small header each.
        var sent = Sum(after, "dancemoe_peer_batch_bytes_total", "peer=\"edge-2\"", "direction=\"sent\"") - Sum(before, "dancemoe_peer_batch_bytes_total", "peer=\"edge-2\"", "direction=\"sent\"");
        var received = Sum(after, "dancemoe_peer_batch_bytes_total", "peer=\"edge-2\"", "direction=\"received\"") - Sum(before, "dancemoe_peer_batch_bytes_total", "peer=\"edge-2\"", "direction=\"received\"");
        var tensors = answers.Sum(a => a.Stats.RemoteBytes);
        var batches = answers.Sum(a => a.Stats.RemoteBatches);
        Assert.True(sent > 0 && received > 0, $"sent {sent}, received {received}");
        Assert.InRange(sent + received, tensors + (2 * batches), tensors + (2 * batches * 4096));
        Assert.Equal(0, Sum(after, "dancemoe_peer_batch_bytes_total", "peer=\"edge-1\"") - Sum(before, "dancemoe_peer_batch_bytes_total", "peer=\"edge-1\""));
        Assert.True(after.ContainsKey("dancemoe_peer_batch_failures_total{peer=\"edge-2\"}"), "the peer's failures are not exported at 0");
        Assert.Equal(0, Value(after, "dancemoe_peer_batch_failures_total{peer=\"edge-2\"}"));
        Assert.DoesNotContain(after.Keys, k => k.StartsWith("dancemoe_peer_batch_failures_total{peer=\"edge-1\"", StringComparison.Ordinal));
        // edge-2 served them and asked nothing of edge-1 meanwhile.
        Assert.Equal(0, Sum(peerAfter, "dancemoe_peer_batch_bytes_total") - Sum(peerBefore, "dancemoe_peer_batch_bytes_total"));
        Assert.Equal(0, Value(after, "dancemoe_requests_active"));
        Assert.Equal(1, Value(after, "dancemoe_placement_version"));
        var architecture = Cluster.Manifest.Architecture;
        Assert.Equal(architecture.NumLayers * architecture.NumExperts / 2, Value(after, "dancemoe_experts_loaded"));
        Assert.True(Value(after, "dancemoe_expert_memory_used_bytes") > 0);
        Assert.Equal(256L << 20, Value(after, "dancemoe_expert_memory_budget_bytes"));
        Assert.Equal(0, Value(after, "dancemoe_trace_rows_lost_total"));
    }

    [Fact]
    public async Task A_refused_request_is_counted_as_rejected()
    {
        var before = await ScrapeAsync("edge-2");

        await Assert.ThrowsAnyAsync<MassTransit.RequestFaultException>(() => Cluster.GenerateAsync("edge-2", "", 4));

        var after = await ScrapeAsync("edge-2");
        Assert.Equal(1, Value(after, "dancemoe_requests_total{status=\"rejected\"}") - Value(before, "dancemoe_requests_total{status=\"rejected\"}"));
    }

    [Fact]
    public async Task Per_expert_activations_only_with_expert_metrics()
    {
        await Cluster.GenerateAsync("edge-1", "per expert", 3);
        await Cluster.GenerateAsync("edge-2", "per expert", 3);

        var withFlag = await ScrapeAsync("edge-1");
        var without = await ScrapeAsync("edge-2");

        var series = withFlag.Keys.Where(k => k.StartsWith("dancemoe_expert_activations_total{", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(series);
        var architecture = Cluster.Manifest.Architecture;
        Assert.True(series.Count <= architecture.NumLayers * architecture.NumExperts);
        Assert.Contains(series, s => s.StartsWith("dancemoe_expert_activations_total{layer=\"0\",expert=\"", StringComparison.Ordinal));
        Assert.DoesNotContain(without.Keys, k => k.StartsWith("dancemoe_expert_activations", StringComparison.Ordinal));
    }

    [Fact]
    public async Task The_scrape_passes_promtool()
    {
        await Cluster.GenerateAsync("edge-2", "promtool reads this", 4);
        foreach (var edge in MetricsClusterFixture.Edges)
        {
            var text = await Http.GetStringAsync(Url(edge, "/metrics"));
            var (exit, output) = await PromtoolAsync(text);
            Assert.True(exit == 0, $"promtool check metrics on {edge}'s scrape: {output}\n{text}");
        }
    }

    [Fact]
    public async Task Probes_answer_on_the_same_listener()
    {
        foreach (var edge in MetricsClusterFixture.Edges)
        {
            using var health = await Http.GetAsync(Url(edge, "/healthz"));
            Assert.Equal(HttpStatusCode.OK, health.StatusCode);
            using var ready = await Http.GetAsync(Url(edge, "/readyz"));
            var reason = await ready.Content.ReadAsStringAsync();
            Assert.True(ready.StatusCode == HttpStatusCode.OK, reason);
            Assert.StartsWith($"{edge}: ready, placement v1", reason, StringComparison.Ordinal);
            using var other = await Http.GetAsync(Url(edge, "/other"));
            Assert.Equal(HttpStatusCode.NotFound, other.StatusCode);
        }
    }

    [Fact]
    public void Readiness_says_why_not_until_the_bus_is_up_and_the_placements_experts_are_loaded()
    {
        var placement = PlacementFile.Uniform(3, 2, 4, ["edge-1", "edge-2"]);
        var mine = placement.ExpertsOf("edge-1").ToHashSet();

        var loading = EdgeReadiness.Evaluate(null, busHealthy: false, null, null);
        var noBus = EdgeReadiness.Evaluate("edge-1", busHealthy: false, placement, (l, e) => true);
        var missing = EdgeReadiness.Evaluate("edge-1", busHealthy: true, placement, (l, e) => mine.Contains((l, e)) && !(l == 1 && e == mine.Where(x => x.Layer == 1).Min(x => x.Expert)));
        var ready = EdgeReadiness.Evaluate("edge-1", busHealthy: true, placement, (l, e) => mine.Contains((l, e)));

        Assert.False(loading.Ready);
        Assert.Contains("loading", loading.Reason, StringComparison.Ordinal);
        Assert.False(noBus.Ready);
        Assert.Contains("bus not connected", noBus.Reason, StringComparison.Ordinal);
        Assert.False(missing.Ready);
        Assert.Contains($"1 of the {mine.Count} experts placement v3", missing.Reason, StringComparison.Ordinal);
        Assert.True(ready.Ready, ready.Reason);
        Assert.Equal(Readiness.Yes(ready.Reason), ready);
    }

    private string Url(string edge, string path) => FormattableString.Invariant($"http://127.0.0.1:{fixture.Ports[edge]}{path}");

    private async Task<Dictionary<string, double>> ScrapeAsync(string edge) => Parse(await Http.GetStringAsync(Url(edge, "/metrics")));

    /// <summary>Series (name with its labels, as written) to value; comments left out.</summary>
    internal static Dictionary<string, double> Parse(string text)
    {
        var series = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            if (line.StartsWith('#'))
            {
                continue;
            }

            var space = line.LastIndexOf(' ');
            series[line[..space]] = double.Parse(line[(space + 1)..], CultureInfo.InvariantCulture);
        }

        return series;
    }

    // A series not written yet counts as 0 (a counter nobody has added to).
    private static double Value(Dictionary<string, double> scrape, string series) => scrape.GetValueOrDefault(series);

    // The sum of a metric's series that carry every one of the labels, in whatever order the exporter writes them.
    private static double Sum(Dictionary<string, double> scrape, string name, params string[] labels) =>
        scrape.Where(kv => (kv.Key == name || kv.Key.StartsWith(name + "{", StringComparison.Ordinal))
            && labels.All(l => kv.Key.Contains(l, StringComparison.Ordinal))).Sum(kv => kv.Value);

    internal static async Task<(int Exit, string Output)> PromtoolAsync(string text)
    {
        var start = new ProcessStartInfo("promtool") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add("check");
        start.ArgumentList.Add("metrics");
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new InvalidOperationException("promtool is missing: install the Debian package prometheus (./dancemoe test does)", ex);
        }

        using (process)
        {
            await process.StandardInput.WriteAsync(text);
            process.StandardInput.Close();
            var output = await process.StandardOutput.ReadToEndAsync() + await process.StandardError.ReadToEndAsync();
            await process.WaitForExitAsync();
            return (process.ExitCode, output);
        }
    }
}
