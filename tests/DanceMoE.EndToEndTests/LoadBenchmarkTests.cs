using System.Text.Json;

namespace DanceMoE.EndToEndTests;

/// <summary><c>bench load</c> through the CLI: its own cluster on the test's vhost and state folder, and the JSON the checks read.</summary>
public sealed class LoadBenchmarkTests
{
    private static readonly string[] Fields =
    [
        "concurrency", "requests", "failed", "oracle_mismatches", "tokens_per_s", "per_token_ms_p50", "per_token_ms_p99",
        "request_ms_p50", "request_ms_p99", "ttft_ms_p50", "ttft_ms_p99", "remote_batches_per_token",
    ];

    [Fact]
    public async Task Bench_load_json_gives_one_level_per_concurrency_with_every_answer_equal_to_the_monolithic_one()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 53);
        var environment = new Dictionary<string, string>
        {
            ["DANCEMOE_STATE"] = Path.Combine(cluster.Directory, "state"),
            ["ConnectionStrings__rabbitmq"] = cluster.VirtualHost.Uri,
        };

        var (exit, output, errors) = await CommandLineTests.RunAsync(
            ["bench", "load", "--model", cluster.ModelDirectory, "--edges", "2", "--concurrency", "1,2", "--requests-per-level", "2", "--max-tokens", "4", "--json"],
            environment, TimeSpan.FromMinutes(5));

        Assert.True(exit == 0, $"bench load exited {exit}: {output}\n{errors}");
        using var json = JsonDocument.Parse(output);
        var levels = json.RootElement.EnumerateArray().ToList();
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
        }

        Assert.DoesNotContain("warning", errors, StringComparison.Ordinal);
    }
}
