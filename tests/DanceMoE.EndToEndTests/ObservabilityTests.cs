using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.RegularExpressions;
using DanceMoE.IntegrationTests;
using DanceMoE.Migrations;
using DanceMoE.Operations;

namespace DanceMoE.EndToEndTests;

/// <summary>What operators scrape: <c>cluster status --json</c>'s URLs, and the compose dashboard's metric names.</summary>
public sealed partial class ObservabilityTests
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(20) };

    [Fact]
    public async Task Cluster_status_json_gives_each_edges_metrics_and_ready_urls_and_they_answer()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 29);
        var environment = cluster.CliEnvironment();
        var portBase = TestPorts.Free(2);
        try
        {
            await TwoEdgesUpAsync(cluster, environment, portBase);

            var (exit, output, errors) = await CommandLineTests.RunAsync(["cluster", "status", "--json"], environment);
            Assert.True(exit == 0, errors);
            using var json = JsonDocument.Parse(output);
            var edges = json.RootElement.EnumerateArray().ToList();
            Assert.Equal(["edge-1", "edge-2"], edges.Select(e => e.GetProperty("id").GetString()));
            for (var i = 0; i < edges.Count; i++)
            {
                var edge = edges[i];
                Assert.True(edge.GetProperty("pid").GetInt32() > 0);
                Assert.Equal(FormattableString.Invariant($"http://127.0.0.1:{portBase + i}/metrics"), edge.GetProperty("metrics_url").GetString());
                using var ready = await Http.GetAsync(edge.GetProperty("ready_url").GetString());
                Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
                using var metrics = await Http.GetAsync(edge.GetProperty("metrics_url").GetString());
                Assert.Equal(HttpStatusCode.OK, metrics.StatusCode);
                Assert.Contains("dancemoe_experts_loaded", await metrics.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            }

            var (_, text, _) = await CommandLineTests.RunAsync(["cluster", "status"], environment);
            Assert.Contains("edge-1 pid ", text, StringComparison.Ordinal);
        }
        finally
        {
            await CommandLineTests.RunAsync(["cluster", "down"], environment);
        }
    }

    [Fact]
    public async Task Top_once_shows_every_edge_with_a_numeric_local_share_and_says_when_no_cluster_runs()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 41);
        var environment = cluster.CliEnvironment();
        var (noneExit, _, noneErrors) = await CommandLineTests.RunAsync(["top", "--once"], environment);
        Assert.Equal(1, noneExit);
        Assert.Contains("no local cluster is running", noneErrors, StringComparison.Ordinal);

        var portBase = TestPorts.Free(2);
        try
        {
            await TwoEdgesUpAsync(cluster, environment, portBase);
            await cluster.GenerateAsync("edge-1", "what top shows", 4);
            await cluster.GenerateAsync("edge-2", "what top shows", 4);

            var (exit, output, errors) = await CommandLineTests.RunAsync(["top", "--once"], environment);

            Assert.True(exit == 0, $"top --once exited {exit}: {output}\n{errors}");
            foreach (var id in new[] { "edge-1", "edge-2" })
            {
                var line = output.Split('\n').Single(l => l.StartsWith(id + " ", StringComparison.Ordinal));
                Assert.Matches(@"(?<!not )\bready\b", line);
                Assert.Matches(@"\d+\.\d %", line);
            }

            Assert.Contains("migration: ", output, StringComparison.Ordinal);
        }
        finally
        {
            await CommandLineTests.RunAsync(["cluster", "down"], environment);
        }
    }

    [Fact]
    public async Task An_edge_whose_process_died_is_down_in_cluster_status_and_top_not_left_out()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 43);
        var environment = cluster.CliEnvironment();
        var portBase = TestPorts.Free(2);
        try
        {
            await TwoEdgesUpAsync(cluster, environment, portBase);
            var (_, before, _) = await CommandLineTests.RunAsync(["cluster", "status", "--json"], environment);
            using (var json = JsonDocument.Parse(before))
            {
                var pid = json.RootElement.EnumerateArray().Single(e => e.GetProperty("id").GetString() == "edge-2").GetProperty("pid").GetInt32();
                LocalCluster.Signal("KILL", pid);
                var deadline = DateTime.UtcNow.AddSeconds(10);
                while (LocalCluster.IsAlive(pid) && DateTime.UtcNow < deadline)
                {
                    await Task.Delay(50);
                }
            }

            var (exit, output, errors) = await CommandLineTests.RunAsync(["cluster", "status", "--json"], environment);
            Assert.True(exit == 0, errors);
            using (var json = JsonDocument.Parse(output))
            {
                Assert.Equal(
                    ["edge-1 running", "edge-2 down"],
                    json.RootElement.EnumerateArray().Select(e => e.GetProperty("id").GetString() + " " + e.GetProperty("state").GetString()));
            }

            var (_, text, _) = await CommandLineTests.RunAsync(["cluster", "status"], environment);
            Assert.Matches(@"^edge-1 pid \d+ running\nedge-2 pid \d+ down ", text);

            var (topExit, top, topErrors) = await CommandLineTests.RunAsync(["top", "--once", "--interval-ms", "100"], environment);
            Assert.True(topExit == 0, $"top --once exited {topExit}: {top}\n{topErrors}");
            Assert.Contains(": 2 edges", top, StringComparison.Ordinal);
            Assert.Matches(@"(?<!not )\bready\b", top.Split('\n').Single(l => l.StartsWith("edge-1 ", StringComparison.Ordinal)));
            Assert.Matches(@"^edge-2 +\d+ +down\b", top.Split('\n').Single(l => l.StartsWith("edge-2 ", StringComparison.Ordinal)));
        }
        finally
        {
            await CommandLineTests.RunAsync(["cluster", "down"], environment);
        }
    }

    private static async Task TwoEdgesUpAsync(EdgeCluster cluster, Dictionary<string, string> environment, int metricsPortBase)
    {
        var (exit, output, errors) = await CommandLineTests.RunAsync(
            ["cluster", "up", "--edges", "2", "--model", cluster.ModelDirectory, "--provider", "cpu", "--no-traces",
             "--memory-mb", "256", "--metrics-port-base", metricsPortBase.ToString(CultureInfo.InvariantCulture)], environment);
        Assert.True(exit == 0, $"cluster up exited {exit}: {output}\n{errors}");
    }

    [Fact]
    public async Task Cluster_up_refuses_a_metrics_port_in_use_in_one_clear_line()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 31);
        var environment = cluster.CliEnvironment();
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        var port = ((IPEndPoint)taken.LocalEndpoint).Port;

        var (exit, output, errors) = await CommandLineTests.RunAsync(
            ["cluster", "up", "--edges", "1", "--model", cluster.ModelDirectory, "--no-traces", "--metrics-port-base", port.ToString(CultureInfo.InvariantCulture)], environment);

        Assert.True(exit != 0, output);
        Assert.Contains($"metrics port {port} (for edge-1) is already in use", errors, StringComparison.Ordinal);
        var (_, status, _) = await CommandLineTests.RunAsync(["cluster", "status", "--json"], environment);
        Assert.Equal("[]", status.Trim());
    }

    [Fact]
    public async Task Every_metric_the_dashboard_queries_is_exported_by_an_edge_or_the_coordinator()
    {
        var used = DashboardMetricNames();
        Assert.Contains("dancemoe_expert_activations_total", used);
        Assert.Contains("dancemoe_request_duration_seconds_bucket", used);

        await using var cluster = await EdgeCluster.CreateAsync(seed: 37);
        var architecture = cluster.Manifest.Architecture;
        var placement = cluster.WritePlacement("uniform.json", DanceMoE.Edge.PlacementFile.Uniform(1, architecture.NumLayers, architecture.NumExperts, ["edge-1", "edge-2"]));
        var edgePort = TestPorts.Free();
        await cluster.StartEdgesAsync(["edge-1"], placement, extraArguments: ["--metrics-port", edgePort.ToString(CultureInfo.InvariantCulture), "--expert-metrics"]);
        await cluster.StartEdgesAsync(["edge-2"], placement);
        var database = new IsolatedDatabase();
        await database.InitializeAsync();
        try
        {
            await DatabaseMigrator.MigrateAsync(database.ConnectionString, TimeSpan.FromSeconds(30), CancellationToken.None);
            var coordinatorPort = TestPorts.Free();
            await using var coordinator = new CoordinatorProcess(cluster.Directory, cluster.VirtualHost.Uri, database.ConnectionString, cluster.ModelDirectory,
                "--metrics-port", coordinatorPort.ToString(CultureInfo.InvariantCulture));
            await coordinator.StartAsync();
            await cluster.GenerateAsync("edge-1", "what the dashboard reads", 4);

            var scrapes = await Http.GetStringAsync(FormattableString.Invariant($"http://127.0.0.1:{edgePort}/metrics"))
                + await Http.GetStringAsync(FormattableString.Invariant($"http://127.0.0.1:{coordinatorPort}/metrics"));
            var exported = MetricsTests.Parse(scrapes).Keys.Select(k => k.Split('{')[0]).ToHashSet(StringComparer.Ordinal);

            var missing = used.Where(n => !exported.Contains(n)).ToList();
            Assert.True(missing.Count == 0, $"the dashboard queries metrics nobody exports: {string.Join(", ", missing)}");
        }
        finally
        {
            await database.DisposeAsync();
        }
    }

    /// <summary>The metric names in the PromQL of every panel of the compose dashboard.</summary>
    private static HashSet<string> DashboardMetricNames()
    {
        using var dashboard = JsonDocument.Parse(File.ReadAllText(ComposeFileTests.DashboardFile()));
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var panel in dashboard.RootElement.GetProperty("panels").EnumerateArray())
        {
            foreach (var target in panel.GetProperty("targets").EnumerateArray())
            {
                foreach (Match m in MetricName().Matches(target.GetProperty("expr").GetString()!))
                {
                    names.Add(m.Value);
                }
            }
        }

        return names;
    }

    [GeneratedRegex("dancemoe_[a-z0-9_]+")]
    private static partial Regex MetricName();
}
