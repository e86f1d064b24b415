using System.Globalization;
using DanceMoE.Coordinator;
using DanceMoE.Data;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Npgsql;
using NpgsqlTypes;
using Quartz;

namespace DanceMoE.IntegrationTests.Coordinator;

/// <summary>
/// The coordinator running <c>latency</c> on experts of 100 MB (a load takes 1.6 s at 500 Mbps). The edges hold each
/// other's experts; their requests in <c>routing_events</c> use their own: edge-a experts 0 and 1 of every layer, edge-b 2 and 3.
/// </summary>
public sealed class LatencyCoordinatorFixture : CoordinatorFixture
{
    public const int SampleRequests = 4;

    public const int RequestsPerEdge = 5;

    private static readonly float[] EvenWeights = [0.5f, 0.5f];

    public override string Algorithm => "latency";

    public override long ExpertBytes => 100_000_000;

    /// <summary>One slot more than the edges' own experts: room to move them.</summary>
    public override int Slots => 5;

    protected override IReadOnlyDictionary<string, string?> ExtraSettings => new Dictionary<string, string?>
    {
        ["PlacementJob:SampleRequests"] = SampleRequests.ToString(CultureInfo.InvariantCulture),
        ["PlacementJob:SolveSeconds"] = "20",
    };

    public override async Task InitializeAsync()
    {
        await base.InitializeAsync();
        var now = DateTimeOffset.UtcNow;
        await SeedActivationsAsync(new DateTimeOffset(now.Year, now.Month, now.Day, now.Hour, now.Minute, 0, TimeSpan.Zero).AddMinutes(-2));
        await SeedRequestsAsync(now.AddMinutes(-3));
        await BeatAsync(now, ("edge-a", ["0:2", "0:3", "1:2", "1:3"]), ("edge-b", ["0:0", "0:1", "1:0", "1:1"]));
    }

    /// <summary>Requests of 6 positions (prompt 4, generated 2) alternating between the edges, one second apart.</summary>
    private async Task SeedRequestsAsync(DateTimeOffset start)
    {
        await using var db = Db();
        await using var connection = new NpgsqlConnection(Database.ConnectionString);
        await connection.OpenAsync();
        for (var i = 0; i < 2 * RequestsPerEdge; i++)
        {
            var edge = EdgeIds[i % 2];
            short[] experts = i % 2 == 0 ? [0, 1] : [2, 3];
            var id = NewId.NextGuid();
            var at = start.AddSeconds(i);
            db.Requests.Add(new InferenceRequest
            {
                Id = id, OriginEdge = edge, PromptTokens = 4, GeneratedTokens = 2, Status = "completed", ReceivedAt = at, CompletedAt = at,
            });
            for (var position = 0; position < 6; position++)
            {
                for (short layer = 0; layer < 2; layer++)
                {
                    await using var insert = new NpgsqlCommand(
                        """
                        INSERT INTO routing_events (request_id, position, layer, origin_edge, experts, gate_weights, served_by, placement_version, remote, recorded_at)
                        VALUES (@id, @position, @layer, @edge, @experts, @weights, @servedBy, 0, false, @at)
                        """,
                        connection);
                    insert.Parameters.AddWithValue("id", id);
                    insert.Parameters.AddWithValue("position", position);
                    insert.Parameters.AddWithValue("layer", layer);
                    insert.Parameters.AddWithValue("edge", edge);
                    insert.Parameters.AddWithValue("experts", experts);
                    insert.Parameters.AddWithValue("weights", EvenWeights);
                    insert.Parameters.Add(new NpgsqlParameter("servedBy", NpgsqlDbType.Array | NpgsqlDbType.Text) { Value = new[] { edge, edge } });
                    insert.Parameters.AddWithValue("at", at.ToUniversalTime());
                    await insert.ExecuteNonQueryAsync();
                }
            }
        }

        await db.SaveChangesAsync();
    }
}

public sealed class LatencyPlacementJobTests(LatencyCoordinatorFixture coordinator) : IClassFixture<LatencyCoordinatorFixture>
{
    [Fact]
    public async Task The_latency_job_plans_from_a_bounded_sample_of_recent_requests_and_weighs_modelled_latency_against_the_migration()
    {
        var commandId = NewId.NextGuid();
        var scheduler = await coordinator.Get<ISchedulerFactory>().GetScheduler();
        await scheduler.TriggerJob(PlacementJob.Key, new JobDataMap { [PlacementJob.CommandIdKey] = commandId.ToString() });

        var decision = await CoordinatorFixture.WaitForAsync(
            async () =>
            {
                await using var db = coordinator.Db();
                return await db.PlacementDecisions.AsNoTracking().SingleOrDefaultAsync(d => d.CommandId == commandId);
            },
            "the latency run records its decision");

        Assert.Equal("latency", decision.Algorithm);
        Assert.Contains($"modelled latency of {LatencyCoordinatorFixture.SampleRequests} recent requests", decision.Reason, StringComparison.Ordinal);
        Assert.True(decision.SolveMilliseconds > 0);

        // Planned from the sample, the candidate keeps each edge's experts at home: its modelled latency is lower than
        // the bootstrap's, where every expert is remote. At the window's few requests per second, 8 loads or more of 1.6 s
        // each do not pay for themselves within the horizon.
        Assert.True(decision.CandidateCostSeconds < decision.CurrentCostSeconds, $"{decision.CandidateCostSeconds} vs {decision.CurrentCostSeconds}");
        Assert.True(decision.Loads >= 8, $"{decision.Loads} loads");
        Assert.True(decision.MigrationCostSeconds > decision.CurrentCostSeconds - decision.CandidateCostSeconds, decision.Reason);
        Assert.Equal("stay", decision.Decision);

        var registry = coordinator.Get<PlacementRegistry>();
        var candidate = await registry.GetAsync(decision.CandidateVersion!.Value, CancellationToken.None);
        Assert.NotNull(candidate);
        foreach (var layer in new[] { 0, 1 })
        {
            Assert.Contains("edge-a", candidate.Assignments.Single(a => a.Layer == layer && a.Expert == 0).Servers);
            Assert.Contains("edge-b", candidate.Assignments.Single(a => a.Layer == layer && a.Expert == 3).Servers);
        }
    }
}
