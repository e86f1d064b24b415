using System.Globalization;
using System.Text.Json;
using DanceMoE.IntegrationTests;
using DanceMoE.Operations;

namespace DanceMoE.EndToEndTests;

/// <summary><c>bench replay</c> through the CLI on a small recorded trace: its own edges, coordinator, virtual host and database.</summary>
public sealed class ReplayBenchmarkTests : IDisposable
{
    private static readonly string[] Domains = ["alpha", "beta"];
    private readonly string _directory = Directory.CreateTempSubdirectory("dancemoe-replay-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public async Task Bench_replay_runs_every_request_with_its_recorded_routing_under_each_placement_and_models_the_same_requests()
    {
        var traces = Path.Combine(_directory, "traces");
        var requests = WriteTraces(traces);
        var vhost = new IsolatedVirtualHost();
        await vhost.InitializeAsync();
        try
        {
            var environment = new Dictionary<string, string>
            {
                ["DANCEMOE_STATE"] = Path.Combine(_directory, "state"),
                ["ConnectionStrings__rabbitmq"] = vhost.Uri,
                ["ConnectionStrings__rabbitmq_admin"] = vhost.Uri,
                ["ConnectionStrings__postgres"] = TestServices.PostgresUrl,
                ["ConnectionStrings__postgres_admin"] = AdminDatabase.ConnectionString(TestServices.PostgresUrl),
            };
            var plot = Path.Combine(_directory, "replay.png");
            var (exit, output, errors) = await CommandLineTests.RunAsync(
                ["bench", "replay", "--history", traces, "--servers", string.Join(",", Domains), "--memory", "0.6", "--algorithms", "eplb,dancemoe",
                 "--requests-per-server", "2", "--decode-tokens", "3", "--plot", plot, "--json"],
                environment, TimeSpan.FromMinutes(15));

            Assert.True(exit == 0, $"bench replay exited {exit}: {output}\n{errors}");
            using var json = JsonDocument.Parse(output);
            var rows = json.RootElement.EnumerateArray().ToList();
            Assert.Equal(["eplb", "dancemoe"], rows.Select(r => r.GetProperty("algorithm").GetString()));
            foreach (var row in rows)
            {
                Assert.Equal(0, row.GetProperty("failed").GetInt32());
                Assert.Equal(2 * Domains.Length, row.GetProperty("requests").GetInt32());
                Assert.True(row.GetProperty("measured_latency_ms_mean").GetDouble() > 0, row.ToString());
                Assert.True(row.GetProperty("measured_latency_ms_p99").GetDouble() >= row.GetProperty("measured_latency_ms_mean").GetDouble(), row.ToString());
                Assert.True(row.GetProperty("measured_decode_ms_per_token").GetDouble() > 0, row.ToString());
                Assert.True(row.GetProperty("modelled_latency_ms_mean").GetDouble() > 0, row.ToString());
                Assert.True(row.GetProperty("remote_batches_per_token").GetDouble() > 0, row.ToString());
                Assert.True(row.GetProperty("remote_bytes_per_token").GetDouble() > 0, row.ToString());

                // The model's wire format: its output rows (a row per remote (token, expert)) are the edges'; only the
                // input rows (a row per token and peer) depend on which replicas the edges chose.
                var measuredBytes = row.GetProperty("remote_bytes_per_token").GetDouble();
                Assert.InRange(row.GetProperty("modelled_bytes_per_token").GetDouble(), 0.75 * measuredBytes, 1.25 * measuredBytes);
                Assert.Equal(17.3, row.GetProperty("expert_size_mb").GetDouble());

                // The routing seam reproduced the trace: the edges' expert calls are exactly those the recorded experts
                // and the placement imply, and every recorded (position, layer) ran.
                var local = row.GetProperty("local_expert_calls").GetInt64();
                var remote = row.GetProperty("remote_expert_calls").GetInt64();
                Assert.Equal(row.GetProperty("expected_local_expert_calls").GetInt64(), local);
                Assert.Equal(row.GetProperty("expected_remote_expert_calls").GetInt64(), remote);
                Assert.True(local > 0 && remote > 0, row.ToString());
                Assert.True(local + remote >= requests * 26, row.ToString());
            }

            Assert.Equal(1.0, rows[0].GetProperty("measured_ratio_to_eplb").GetDouble());
            Assert.Equal(1.0, rows[0].GetProperty("modelled_ratio_to_eplb").GetDouble());
            Assert.True(rows[1].GetProperty("measured_ratio_to_eplb").GetDouble() > 0);
            Assert.True(new FileInfo(plot).Length > 0);
        }
        finally
        {
            await vhost.DisposeAsync();
        }
    }

    /// <summary>Seeded DeepSeek-V2-Lite-shaped traces (26 layers, 64 experts, top-6): 4 requests per domain, each leaning to its own experts.</summary>
    private static int WriteTraces(string directory)
    {
        Directory.CreateDirectory(directory);
        var random = new Random(14);
        var lengths = new[] { 9, 12, 8, 10 };
        for (var d = 0; d < Domains.Length; d++)
        {
            var lines = lengths.Select(tokens => Enumerable.Range(0, 26).Select(_ => Enumerable.Range(0, tokens)
                .SelectMany(_ => Enumerable.Range(0, 64).OrderBy(e => random.NextDouble() - (((e / 32) == d) ? 0.4 : 0)).Take(6)).ToList()).ToList()).ToList();
            for (var l = 0; l < 26; l++)
            {
                File.WriteAllLines(
                    Path.Combine(directory, string.Create(CultureInfo.InvariantCulture, $"{Domains[d]}.layer{l + 1:D2}.txt")),
                    lines.Select(request => string.Join('\t', request[l])));
            }
        }

        return Domains.Length * 2;
    }
}
