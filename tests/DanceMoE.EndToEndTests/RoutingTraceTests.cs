using DanceMoE.Data;
using DanceMoE.Edge;
using DanceMoE.Inference;
using DanceMoE.IntegrationTests;
using DanceMoE.IntegrationTests.Traces;
using DanceMoE.Migrations;
using DanceMoE.Model;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace DanceMoE.EndToEndTests;

public sealed class RoutingTraceTests
{
    [Fact]
    public async Task After_a_distributed_request_routing_events_hold_exactly_what_the_edges_did()
    {
        var database = new IsolatedDatabase();
        await database.InitializeAsync();
        try
        {
            await DatabaseMigrator.MigrateAsync(database.ConnectionString, TimeSpan.FromSeconds(10), CancellationToken.None);
            await using var cluster = await EdgeCluster.CreateAsync(seed: 5);
            var a = cluster.Manifest.Architecture;
            string[] edges = ["edge-1", "edge-2", "edge-3"];
            var placement = PlacementFile.Uniform(1, a.NumLayers, a.NumExperts, edges);
            await cluster.StartEdgesAsync(edges, cluster.WritePlacement("uniform.json", placement), traceDatabase: database.ConnectionString);
            const string prompt = "analysts query the activation history";
            var oracle = await OracleRoutingAsync(cluster.Manifest, prompt, 8);

            var answer = await cluster.GenerateAsync("edge-2", prompt, 8);

            var positions = answer.Stats.PromptTokens + answer.TokenIds.Count - 1;
            var rows = await WaitForRowsAsync(database.ConnectionString, answer.RequestId, positions * a.NumLayers);
            Assert.Equal(positions * a.NumLayers, rows.Count);
            Assert.Equal(positions, rows.Select(r => r.Position).Distinct().Count());
            foreach (var row in rows)
            {
                var expected = oracle[(row.Position, row.Layer)];
                Assert.Equal(expected.Select(c => (short)c.Expert), row.Experts);
                Assert.Equal(expected.Select(c => c.Weight), row.GateWeights);
                Assert.Equal(row.Experts.Select(e => placement.ServersOf(row.Layer, e)[0]), row.ServedBy);
                Assert.Equal(row.ServedBy.Any(s => s != "edge-2"), row.Remote);
                Assert.Equal("edge-2", row.OriginEdge);
                Assert.Equal(1, row.PlacementVersion);
            }

            // The edge counts one remote call per expert per layer per forward step: the prefill is one step.
            var prompted = answer.Stats.PromptTokens;
            var remoteCalls = rows.Where(r => r.Position < prompted).GroupBy(r => r.Layer)
                    .Sum(g => g.SelectMany(r => r.Experts.Zip(r.ServedBy)).Where(x => x.Second != "edge-2").Select(x => x.First).Distinct().Count())
                + rows.Where(r => r.Position >= prompted).Sum(r => r.ServedBy.Count(s => s != "edge-2"));
            Assert.Equal(answer.Stats.RemoteExpertCalls, remoteCalls);
            var request = await WaitForRequestAsync(database.ConnectionString, answer.RequestId);
            Assert.Equal("completed", request.Status, ignoreCase: true);
            Assert.Equal(answer.TokenIds.Count, request.GeneratedTokens);
            Assert.Equal("edge-2", request.OriginEdge);
            Assert.Equal(answer.Stats.PromptTokens, request.PromptTokens);
            // request_overview.time_to_first_token_ms reads it: the end of the prefill, between arrival and completion.
            var firstToken = Assert.NotNull(request.FirstTokenAt);
            Assert.InRange(firstToken, request.ReceivedAt, request.CompletedAt);
            Assert.Equal(16, request.Fingerprint?.Length);
            // What crossed the network for it, as its answer counted it (it ran alone: every batch was its own).
            Assert.True(answer.Stats.RemoteBytes > 0);
            Assert.Equal(answer.Stats.RemoteBatches, (long?)request.RemoteBatches);
            Assert.Equal(answer.Stats.RemoteBatchShare, request.RemoteBatchShare);
            Assert.Equal(answer.Stats.RemoteBytes, request.RemoteBytes);
            Assert.Equal(answer.Stats.Retries, request.BatchRetries);
            Assert.Equal((double?)request.RemoteBatches, request.RemoteBatchShare);
        }
        finally
        {
            await database.DisposeAsync();
        }
    }

    [Fact]
    public async Task PostgreSQL_stopped_during_a_run_stalls_no_request_and_afterwards_every_row_is_there_once()
    {
        await using var server = await PrivatePostgres.StartAsync();
        var connectionString = await server.CreateMigratedDatabaseAsync("traces");
        await using var cluster = await EdgeCluster.CreateAsync(seed: 29);
        var a = cluster.Manifest.Architecture;
        string[] edges = ["edge-1", "edge-2"];
        var placement = cluster.WritePlacement("uniform.json", PlacementFile.Uniform(1, a.NumLayers, a.NumExperts, edges));
        await cluster.StartEdgesAsync(edges, placement, traceDatabase: connectionString);

        var before = await cluster.GenerateAsync("edge-1", "before the outage", 12);
        await server.StopImmediatelyAsync();
        var during = new List<DanceMoE.Contracts.TextGenerated>();
        foreach (var prompt in new[] { "while the database is down", "still down, still serving" })
        {
            during.Add(await cluster.GenerateAsync("edge-1", prompt, 12, TimeSpan.FromSeconds(60)));
            during.Add(await cluster.GenerateAsync("edge-2", prompt, 12, TimeSpan.FromSeconds(60)));
        }

        await server.StartAgainAsync();

        foreach (var answer in during.Prepend(before))
        {
            var expected = (answer.Stats.PromptTokens + answer.TokenIds.Count - 1) * a.NumLayers;
            var rows = await WaitForRowsAsync(connectionString, answer.RequestId, expected, TimeSpan.FromSeconds(60));
            Assert.Equal(expected, rows.Count);
            Assert.Equal(expected, rows.Select(r => (r.Position, r.Layer)).Distinct().Count());
        }

        await using var db = DanceMoEDbContext.Create(connectionString);
        Assert.Equal(during.Count + 1, await db.Requests.CountAsync());
    }

    /// <summary>The monolithic run's routing decisions, per (position, layer): what any correct edge must record.</summary>
    private static async Task<Dictionary<(int Position, int Layer), IReadOnlyList<ExpertChoice>>> OracleRoutingAsync(ModelManifest manifest, string prompt, int maxTokens)
    {
        var factory = new SessionFactory(new InferenceOptions { Provider = ExecutionProvider.Cpu });
        using var pool = new ExpertSessionPool(manifest, factory);
        using var forward = new MoeForward(manifest, factory, new LocalExpertDispatcher(pool));
        var routing = new Dictionary<(int, int), IReadOnlyList<ExpertChoice>>();
        var tokenizer = new ByteTokenizer(manifest.Tokenizer!.BosTokenId, manifest.Tokenizer.EosTokenId);
        var context = new ForwardContext(recordRouting: true);
        await Generator.GenerateAsync(forward, tokenizer, tokenizer.Encode(prompt), maxTokens, new SamplingOptions(), context, CancellationToken.None);
        foreach (var r in context.Decisions)
        {
            routing[(r.Position, r.Layer)] = r.Choices;
        }

        return routing;
    }

    private static async Task<List<RoutingEvent>> WaitForRowsAsync(string connectionString, Guid requestId, int expected, TimeSpan? wait = null)
    {
        var deadline = DateTime.UtcNow + (wait ?? TimeSpan.FromSeconds(30));
        while (true)
        {
            await using var db = DanceMoEDbContext.Create(connectionString);
            List<RoutingEvent> rows;
            try
            {
                rows = await db.RoutingEvents.AsNoTracking().Where(r => r.RequestId == requestId).OrderBy(r => r.Position).ThenBy(r => r.Layer).ToListAsync();
            }
            catch (NpgsqlException) when (DateTime.UtcNow < deadline)
            {
                // The server is still recovering from its hard stop.
                await Task.Delay(200);
                continue;
            }

            if (rows.Count >= expected || DateTime.UtcNow > deadline)
            {
                return rows;
            }

            await Task.Delay(200);
        }
    }

    private static async Task<InferenceRequest> WaitForRequestAsync(string connectionString, Guid requestId)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (true)
        {
            await using var db = DanceMoEDbContext.Create(connectionString);
            var row = await db.Requests.AsNoTracking().SingleOrDefaultAsync(r => r.Id == requestId);
            if (row is not null)
            {
                return row;
            }

            Assert.True(DateTime.UtcNow < deadline, $"request {requestId} never reached the requests table");
            await Task.Delay(200);
        }
    }
}
