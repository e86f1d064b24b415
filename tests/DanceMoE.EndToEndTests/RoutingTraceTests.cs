using DanceMoE.Data;
using DanceMoE.Edge;
using DanceMoE.Inference;
using DanceMoE.IntegrationTests;
using DanceMoE.Migrations;
using DanceMoE.Model;
using Microsoft.EntityFrameworkCore;

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
        }
        finally
        {
            await database.DisposeAsync();
        }
    }

    /// <summary>The monolithic run's routing decisions, per (position, layer): what any correct edge must record.</summary>
    private static async Task<Dictionary<(int Position, int Layer), IReadOnlyList<ExpertChoice>>> OracleRoutingAsync(ModelManifest manifest, string prompt, int maxTokens)
    {
        var factory = new SessionFactory(new InferenceOptions { Provider = ExecutionProvider.Cpu });
        using var pool = new ExpertSessionPool(manifest, factory);
        using var forward = new MoeForward(manifest, factory, new LocalExpertDispatcher(pool));
        var routing = new Dictionary<(int, int), IReadOnlyList<ExpertChoice>>();
        forward.OnRouting = r => routing[(r.Position, r.Layer)] = r.Choices;
        var tokenizer = new ByteTokenizer(manifest.Tokenizer!.BosTokenId, manifest.Tokenizer.EosTokenId);
        await Generator.GenerateAsync(forward, tokenizer, tokenizer.Encode(prompt), maxTokens, new SamplingOptions(), CancellationToken.None);
        return routing;
    }

    private static async Task<List<RoutingEvent>> WaitForRowsAsync(string connectionString, Guid requestId, int expected)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (true)
        {
            await using var db = DanceMoEDbContext.Create(connectionString);
            var rows = await db.RoutingEvents.AsNoTracking().Where(r => r.RequestId == requestId).OrderBy(r => r.Position).ThenBy(r => r.Layer).ToListAsync();
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
