using System.Globalization;
using System.Text.Json;
using DanceMoE.IntegrationTests;

namespace DanceMoE.EndToEndTests;

/// <summary><c>bench load</c> through the CLI: its own cluster on the test's vhost and state folder, and the JSON the checks read.</summary>
public sealed class LoadBenchmarkTests
{
    private static readonly string[] Fields =
    [
        "concurrency", "requests", "failed", "oracle_mismatches", "tokens_per_s", "per_token_ms_p50", "per_token_ms_p99",
        "request_ms_p50", "request_ms_p99", "ttft_ms_p50", "ttft_ms_p99", "remote_batches_per_token",
        "edge_cpu_ms_per_token", "broker_cpu_ms_per_token", "client_cpu_ms_per_token", "machine_cores_busy", "machine_cores", "refused_at_capacity", "round_tokens_per_s", "requests_by_edge",
    ];

    [Fact]
    public async Task Bench_load_json_gives_one_level_per_concurrency_with_every_answer_equal_to_the_monolithic_one()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 53);
        var (levels, errors) = await BenchLoadAsync(cluster, "--edges", "2", "--concurrency", "1,2", "--requests-per-level", "2", "--max-tokens", "4");
        Assert.Equal([1, 2], levels.Select(l => l.GetProperty("concurrency").GetInt32()));
        foreach (var level in levels)
        {
            Assert.Equal(Fields, level.EnumerateObject().Select(p => p.Name));
            Assert.Equal(2, level.GetProperty("requests").GetInt32());
            Assert.Equal(0, level.GetProperty("failed").GetInt32());
            Assert.Equal(0, level.GetProperty("oracle_mismatches").GetInt32());
            Assert.True(level.GetProperty("tokens_per_s").GetDouble() > 0, level.ToString());
            Assert.True(level.GetProperty("ttft_ms_p50").GetDouble() > 0, level.ToString());
            Assert.True(level.GetProperty("request_ms_p50").GetDouble() >= level.GetProperty("ttft_ms_p50").GetDouble(), level.ToString());
            Assert.True(level.GetProperty("remote_batches_per_token").GetDouble() > 0, level.ToString());
            Assert.True(level.GetProperty("edge_cpu_ms_per_token").GetDouble() > 0, level.ToString());
            var cores = level.GetProperty("machine_cores").GetInt32();
            Assert.True(cores >= 1, level.ToString());
            Assert.InRange(level.GetProperty("machine_cores_busy").GetDouble(), 0.01, cores);
            Assert.Equal(["edge-1:1", "edge-2:1"], RequestsByEdge(level));
        }

        Assert.Contains("requests spread over the 2 edges", errors, StringComparison.Ordinal);
        Assert.DoesNotContain("warning", errors, StringComparison.Ordinal);
    }

    /// <summary>Rounds run the levels in turns on one cluster; each level pools its rounds' requests (and so its answers, all checked).</summary>
    [Fact]
    public async Task Bench_load_rounds_take_the_levels_in_turns_and_pool_each_levels_requests()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 73);
        var (levels, errors) = await BenchLoadAsync(cluster, "--edges", "2", "--concurrency", "1,2", "--requests-per-level", "2", "--rounds", "2", "--max-tokens", "4");
        Assert.Equal([1, 2], levels.Select(l => l.GetProperty("concurrency").GetInt32()));
        foreach (var level in levels)
        {
            Assert.Equal(4, level.GetProperty("requests").GetInt32());
            Assert.Equal(0, level.GetProperty("failed").GetInt32());
            Assert.Equal(0, level.GetProperty("oracle_mismatches").GetInt32());
            Assert.True(level.GetProperty("tokens_per_s").GetDouble() > 0, level.ToString());
            Assert.Equal(["edge-1:2", "edge-2:2"], RequestsByEdge(level));
            var rounds = Numbers(level, "round_tokens_per_s");
            Assert.Equal(2, rounds.Count);
            Assert.All(rounds, r => Assert.True(r > 0, level.ToString()));
            // Pooled: the level's tokens over its summed wall time lies between its rounds' rates.
            Assert.InRange(level.GetProperty("tokens_per_s").GetDouble(), rounds.Min() - 0.01, rounds.Max() + 0.01);
        }

        var turns = errors.Split('\n').Where(line => line.Contains("closed-loop clients (round", StringComparison.Ordinal)).ToList();
        Assert.Equal(
            ["2 requests from 1 closed-loop clients (round 1 of 2)", "2 requests from 2 closed-loop clients (round 1 of 2)",
             "2 requests from 1 closed-loop clients (round 2 of 2)", "2 requests from 2 closed-loop clients (round 2 of 2)"],
            turns.Select(line => line[(line.IndexOf("2 requests", StringComparison.Ordinal))..].TrimEnd('.', '\r')));
    }

    [Theory]
    [InlineData("0")]
    [InlineData("101")]
    [InlineData("two")]
    public async Task Bench_load_rounds_outside_1_to_100_is_a_usage_error(string rounds)
    {
        var (exit, _, errors) = await CommandLineTests.RunAsync(
            ["bench", "load", "--rounds", rounds, "--json"], new Dictionary<string, string>(), TimeSpan.FromMinutes(2));
        Assert.NotEqual(0, exit);
        Assert.Contains("--rounds", errors, StringComparison.Ordinal);
    }

    /// <summary>The warm-up sends one request per edge; with fewer requests per level than edges its prompts need answers too.</summary>
    [Fact]
    public async Task Bench_load_with_fewer_requests_per_level_than_edges_checks_the_warm_up_and_every_answer()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 59);
        var (levels, errors) = await BenchLoadAsync(cluster, "--edges", "3", "--concurrency", "1", "--requests-per-level", "1", "--max-tokens", "2");
        var level = Assert.Single(levels);
        Assert.Equal(1, level.GetProperty("requests").GetInt32());
        Assert.Equal(0, level.GetProperty("failed").GetInt32());
        Assert.Equal(0, level.GetProperty("oracle_mismatches").GetInt32());
        Assert.Contains("the monolithic answers of 3 prompts", errors, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bench_load_only_edge_sends_every_request_to_that_edge_whose_experts_elsewhere_serve_it_and_answers_stay_equal()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 61);
        var (levels, errors) = await BenchLoadAsync(cluster, "--edges", "2", "--only-edge", "2", "--concurrency", "2", "--requests-per-level", "3", "--max-tokens", "4");
        var level = Assert.Single(levels);
        Assert.Equal(["edge-2:3"], RequestsByEdge(level));
        Assert.Equal(0, level.GetProperty("failed").GetInt32());
        Assert.Equal(0, level.GetProperty("oracle_mismatches").GetInt32());
        Assert.True(level.GetProperty("remote_batches_per_token").GetDouble() > 0, level.ToString());
        Assert.Contains("every request to edge-2", errors, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bench_load_beyond_an_edges_active_and_waiting_requests_counts_its_refusals_among_the_failed()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 71);
        // 100 at once to one edge: 16 active and 64 waiting at most; the rest are refused at once, none lost.
        var (levels, errors) = await BenchLoadAsync(cluster, "--edges", "2", "--only-edge", "1", "--concurrency", "100", "--requests-per-level", "100", "--max-tokens", "24");
        var level = Assert.Single(levels);
        var failed = level.GetProperty("failed").GetInt32();
        var refused = level.GetProperty("refused_at_capacity").GetInt32();
        Assert.True(refused > 0, level.ToString());
        Assert.Equal(failed, refused);
        Assert.Equal(0, level.GetProperty("oracle_mismatches").GetInt32());
        Assert.Contains("is at capacity", errors, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bench_load_only_edge_outside_the_cluster_is_a_usage_error_before_anything_starts()
    {
        var (exit, output, errors) = await CommandLineTests.RunAsync(
            ["bench", "load", "--edges", "2", "--only-edge", "3", "--concurrency", "1", "--json"], new Dictionary<string, string>(), TimeSpan.FromMinutes(2));

        Assert.Equal(2, exit);
        Assert.Equal(string.Empty, output);
        Assert.Contains("--only-edge 3: the cluster has edges 1 to 2", errors, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("0")]
    [InlineData("1,,4")]
    [InlineData("10001")]
    [InlineData("four")]
    public async Task Bench_load_concurrency_outside_1_to_10000_is_a_usage_error_naming_the_value(string levels)
    {
        var (exit, output, errors) = await CommandLineTests.RunAsync(
            ["bench", "load", "--concurrency", levels, "--json"], new Dictionary<string, string>(), TimeSpan.FromMinutes(2));

        Assert.Equal(2, exit);
        Assert.Equal(string.Empty, output);
        var bad = levels.Split(',').First(l => !int.TryParse(l, out var v) || v < 1 || v > 10_000);
        Assert.Contains($"--concurrency takes numbers from 1 to 10000 separated by commas (got '{bad}')", errors, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bench_load_metrics_overhead_json_gives_each_rounds_tokens_per_s_and_cpu_per_token_on_and_off_with_their_ratios()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 59);
        var environment = cluster.CliEnvironment();

        var (exit, output, errors) = await CommandLineTests.RunAsync(
            ["bench", "load", "--model", cluster.ModelDirectory, "--edges", "2", "--concurrency", "2", "--requests-per-level", "4", "--max-tokens", "16",
             "--metrics-overhead", "--overhead-rounds", "2", "--metrics-port-base", TestPorts.Free(2).ToString(CultureInfo.InvariantCulture), "--json"],
            environment, TimeSpan.FromMinutes(5));

        // The run itself checks each level's token counters: moved by the tokens answered with recording on, not at all with it off.
        Assert.True(exit == 0, $"bench load exited {exit}: {output}\n{errors}");
        using var json = JsonDocument.Parse(output);
        var overhead = json.RootElement.GetProperty("metrics_overhead");
        Assert.Equal(2, overhead.GetProperty("concurrency").GetInt32());
        Assert.Equal(2, overhead.GetProperty("rounds").GetInt32());
        var on = Numbers(overhead, "tokens_per_s_on");
        var off = Numbers(overhead, "tokens_per_s_off");
        AssertRatios(on.Zip(off, (a, b) => a / b), Numbers(overhead, "round_ratios"));
        var cpuOn = Numbers(overhead, "cpu_ms_per_token_on");
        var cpuOff = Numbers(overhead, "cpu_ms_per_token_off");
        Assert.All(cpuOn.Concat(cpuOff), c => Assert.True(c > 0, overhead.ToString()));
        AssertRatios(cpuOff.Zip(cpuOn, (a, b) => a / b), Numbers(overhead, "cpu_round_ratios"));
        Assert.InRange(overhead.GetProperty("ratio").GetDouble(), overhead.GetProperty("ratio_p25").GetDouble(), overhead.GetProperty("ratio_p75").GetDouble());
        Assert.InRange(overhead.GetProperty("cpu_ratio").GetDouble(), overhead.GetProperty("cpu_ratio_p25").GetDouble(), overhead.GetProperty("cpu_ratio_p75").GetDouble());
        var recordingUs = overhead.GetProperty("recording_us_per_token").GetDouble();
        Assert.True(recordingUs > 0, overhead.ToString());
        AssertRatios([recordingUs / (cpuOn.Average() * 1000)], [overhead.GetProperty("recording_share_of_cpu").GetDouble()]);
    }

    /// <summary>The printed ratios are those of the printed values, which are rounded: equal within 2%.</summary>
    private static void AssertRatios(IEnumerable<double> expected, List<double> printed)
    {
        var pairs = expected.Zip(printed).ToList();
        Assert.Equal(printed.Count, pairs.Count);
        Assert.All(pairs, p => Assert.InRange(p.Second / p.First, 0.98, 1.02));
    }

    /// <summary>Runs <c>bench load --model MODEL ARGUMENTS --json</c> on the test's virtual host and state folder; its levels and its log.</summary>
    private static async Task<(JsonElement[] Levels, string Errors)> BenchLoadAsync(EdgeCluster cluster, params string[] arguments)
    {
        var environment = cluster.CliEnvironment();
        var (exit, output, errors) = await CommandLineTests.RunAsync(
            ["bench", "load", "--model", cluster.ModelDirectory, .. arguments, "--json"], environment, TimeSpan.FromMinutes(5));
        Assert.True(exit == 0, $"bench load exited {exit}: {output}\n{errors}");
        using var json = JsonDocument.Parse(output);
        return ([.. json.RootElement.EnumerateArray().Select(level => level.Clone())], errors);
    }

    private static List<string> RequestsByEdge(JsonElement level) =>
        [.. level.GetProperty("requests_by_edge").EnumerateObject().Select(p => $"{p.Name}:{p.Value.GetInt32()}")];

    private static List<double> Numbers(JsonElement element, string name) => [.. element.GetProperty(name).EnumerateArray().Select(e => e.GetDouble())];
}
