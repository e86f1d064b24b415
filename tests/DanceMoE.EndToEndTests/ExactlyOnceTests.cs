using System.Globalization;
using System.Text.Json;
using DanceMoE.Edge;
using DanceMoE.IntegrationTests;
using DanceMoE.Migrations;
using MassTransit;
using Npgsql;

namespace DanceMoE.EndToEndTests;

public sealed class ExactlyOnceTests
{
    [Fact]
    public async Task A_request_id_sent_twice_with_infer_stores_its_routing_rows_once()
    {
        var database = new IsolatedDatabase();
        await database.InitializeAsync();
        try
        {
            await DatabaseMigrator.MigrateAsync(database.ConnectionString, TimeSpan.FromSeconds(10), CancellationToken.None);
            await using var cluster = await EdgeCluster.CreateAsync(seed: 31);
            var a = cluster.Manifest.Architecture;
            string[] edges = ["edge-1", "edge-2"];
            var placement = cluster.WritePlacement("uniform.json", PlacementFile.Uniform(1, a.NumLayers, a.NumExperts, edges));
            var metricsPort = TestPorts.Free();
            var otherMetricsPort = TestPorts.Free();
            await cluster.StartEdgesAsync(["edge-1"], placement, traceDatabase: database.ConnectionString, extraArguments: ["--metrics-port", metricsPort.ToString(CultureInfo.InvariantCulture)]);
            await cluster.StartEdgesAsync(["edge-2"], placement, traceDatabase: database.ConnectionString, extraArguments: ["--metrics-port", otherMetricsPort.ToString(CultureInfo.InvariantCulture)]);
            var requestId = NewId.NextGuid();

            var first = await InferAsync(cluster, "edge-1", requestId, maxTokens: 6);
            var second = await InferAsync(cluster, "edge-1", requestId, maxTokens: 6);
            // The id reused on an edge that never saw it, for the same prompt with another length: served, and not stored.
            var reuse = await InferAsync(cluster, "edge-2", requestId, maxTokens: 5);

            Assert.Equal(requestId, first.GetProperty("request_id").GetGuid());
            Assert.Equal(requestId, second.GetProperty("request_id").GetGuid());
            Assert.Equal(requestId, reuse.GetProperty("request_id").GetGuid());
            var stats = first.GetProperty("stats");
            var rowsOfOneServing = (stats.GetProperty("prompt_tokens").GetInt32() + first.GetProperty("token_ids").GetArrayLength() - 1) * a.NumLayers;

            // The edge's writer commits in order: once a later request's rows are there, the second serving's were written too.
            var later = await cluster.GenerateAsync("edge-1", "a later request", 4);
            await WaitForRowsAsync(database.ConnectionString, later.RequestId);
            Assert.Equal(rowsOfOneServing, await RowsOfAsync(database.ConnectionString, requestId));
            Assert.Equal(0, await ActivationsMinusRoutingAsync(database.ConnectionString));

            // An operator sees the rows the second serving did not store.
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(20) };
            var scrape = MetricsTests.Parse(await http.GetStringAsync(FormattableString.Invariant($"http://127.0.0.1:{metricsPort}/metrics")));
            Assert.Equal(rowsOfOneServing, scrape.GetValueOrDefault("dancemoe_trace_rows_duplicate_total"));
            Assert.Equal(0, scrape.GetValueOrDefault("dancemoe_trace_rows_quarantined_total", -1));
            Assert.Equal(0, scrape.GetValueOrDefault("dancemoe_trace_request_id_conflicts_total", -1));
            // edge-2's writer flushes on its own clock: its conflict shows once its batch is written.
            var deadline = DateTime.UtcNow.AddSeconds(20);
            double conflicts;
            while ((conflicts = MetricsTests.Parse(await http.GetStringAsync(FormattableString.Invariant($"http://127.0.0.1:{otherMetricsPort}/metrics")))
                       .GetValueOrDefault("dancemoe_trace_request_id_conflicts_total", -1)) < 1 && DateTime.UtcNow < deadline)
            {
                await Task.Delay(200);
            }

            Assert.Equal(1, conflicts);
            Assert.Equal(first.GetProperty("token_ids").GetArrayLength(), await ScalarAsync(database.ConnectionString, "SELECT generated_tokens FROM requests WHERE id = @r", requestId));
        }
        finally
        {
            await database.DisposeAsync();
        }
    }

    [Theory]
    [InlineData("not-a-guid")]
    [InlineData("00000000-0000-0000-0000-000000000000")]
    public async Task Infer_refuses_a_request_id_that_is_not_a_usable_guid_in_one_line(string requestId)
    {
        var (exitCode, _, errors) = await CommandLineTests.RunAsync(["infer", "--edge", "edge-1", "--prompt", "hello", "--request-id", requestId]);

        Assert.True(exitCode == 2, $"exit {exitCode}: {errors}");
        var line = Assert.Single(errors.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("dancemoe infer: --request-id: not a GUID", line, StringComparison.Ordinal);
    }

    private static async Task<JsonElement> InferAsync(EdgeCluster cluster, string edge, Guid requestId, int maxTokens)
    {
        var (exitCode, output, errors) = await CommandLineTests.RunAsync(
            ["infer", "--edge", edge, "--prompt", "the same request twice", "--max-tokens", maxTokens.ToString(CultureInfo.InvariantCulture), "--request-id", requestId.ToString(), "--json"],
            new Dictionary<string, string> { ["ConnectionStrings__rabbitmq"] = cluster.VirtualHost.Uri });
        Assert.True(exitCode == 0, $"exit {exitCode}: {errors}");
        return JsonDocument.Parse(output).RootElement.Clone();
    }

    private static async Task<long> RowsOfAsync(string connectionString, Guid requestId) =>
        await ScalarAsync(connectionString, "SELECT count(*) FROM routing_events WHERE request_id = @r", requestId);

    /// <summary>Activations counted minus experts in the stored rows: 0 when nothing was counted twice.</summary>
    private static async Task<long> ActivationsMinusRoutingAsync(string connectionString) =>
        await ScalarAsync(connectionString, "SELECT (SELECT coalesce(sum(count), 0) FROM activation_counts) - (SELECT coalesce(sum(cardinality(experts)), 0) FROM routing_events)");

    private static async Task WaitForRowsAsync(string connectionString, Guid requestId)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (await RowsOfAsync(connectionString, requestId) == 0)
        {
            Assert.True(DateTime.UtcNow < deadline, $"no routing rows of {requestId} within 30 s");
            await Task.Delay(200);
        }
    }

    private static async Task<long> ScalarAsync(string connectionString, string sql, Guid? requestId = null)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        if (requestId is { } id)
        {
            command.Parameters.AddWithValue("r", id);
        }

        return Convert.ToInt64(await command.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture);
    }
}
