using DanceMoE.Data;
using DanceMoE.Traces;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace DanceMoE.IntegrationTests.Traces;

public sealed class TraceSchemaTests(TraceDatabase database) : IClassFixture<TraceDatabase>
{
    private static readonly string[] Views = ["expert_popularity_hourly", "local_ratio_by_placement", "expert_coactivation", "request_path", "request_overview", "communication_by_placement"];
    private static readonly string[] Tables = ["requests", "routing_events", "activation_counts", "placements", "placement_assignments", "edge_servers"];

    [Fact]
    public async Task Every_table_view_and_column_an_analyst_sees_has_a_comment()
    {
        var missing = await database.RowsAsync("""
            SELECT c.relname || coalesce('.' || a.attname, '')
            FROM pg_class c
            LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p')
            WHERE c.relnamespace = 'public'::regnamespace
              AND c.relname IN ('requests', 'routing_events', 'activation_counts', 'placements', 'placement_assignments',
                                'expert_popularity_hourly', 'local_ratio_by_placement', 'expert_coactivation', 'request_path', 'request_overview',
                                'communication_by_placement')
              AND (CASE WHEN a.attname IS NULL THEN obj_description(c.oid, 'pg_class') ELSE col_description(c.oid, a.attnum) END) IS NULL
            """);
        Assert.Empty(missing.Select(r => (string)r[0]));
    }

    [Fact]
    public async Task Retention_drops_the_partitions_older_than_the_kept_window_and_keeps_the_rest()
    {
        const string edge = "edge-retention";
        var today = DateOnly.FromDateTime(DateTime.UtcNow);
        var created = await RoutingPartitions.EnsureAsync(database.ConnectionString, today.AddDays(-30), 3, CancellationToken.None);
        Assert.Equal([Partition(today.AddDays(-30)), Partition(today.AddDays(-29)), Partition(today.AddDays(-28))], created);
        Assert.Empty(await RoutingPartitions.EnsureAsync(database.ConnectionString, today.AddDays(-30), 3, CancellationToken.None));

        var old = new DateTimeOffset(today.AddDays(-29).ToDateTime(new TimeOnly(12, 0)), TimeSpan.Zero);
        var older = new DateTimeOffset(today.AddDays(-40).ToDateTime(new TimeOnly(12, 0)), TimeSpan.Zero);
        await WriteAsync(edge, TraceRecords.Request(edge, Guid.NewGuid(), 5, 2, at: old)
            .Concat(TraceRecords.Request(edge, Guid.NewGuid(), 5, 2, at: older))
            .Concat(TraceRecords.Request(edge, Guid.NewGuid(), 5, 2)));
        Assert.Equal(10, await database.ScalarAsync("SELECT count(*) FROM routing_events_default WHERE origin_edge = @e", ("e", edge)));

        var dropped = await RoutingPartitions.DropOlderThanAsync(database.ConnectionString, TimeSpan.FromDays(7), CancellationToken.None);

        Assert.Equal(created, dropped);
        var remaining = await RoutingPartitions.ListAsync(database.ConnectionString, CancellationToken.None);
        Assert.DoesNotContain(Partition(today.AddDays(-29)), remaining);
        Assert.Contains(Partition(today), remaining);
        Assert.Equal(10, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE origin_edge = @e", ("e", edge)));
        Assert.Equal(0, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE origin_edge = @e AND recorded_at < now() - interval '7 days'", ("e", edge)));
        Assert.Equal(30, await database.ScalarAsync("SELECT sum(count) / 2 FROM activation_counts WHERE origin_edge = @e", ("e", edge)));
    }

    [Fact]
    public async Task Rows_of_a_day_without_a_partition_wait_in_the_default_one_and_move_when_it_is_created()
    {
        const string edge = "edge-default";
        var day = DateOnly.FromDateTime(DateTime.UtcNow).AddDays(-20);
        var at = new DateTimeOffset(day.ToDateTime(new TimeOnly(8, 30)), TimeSpan.Zero);
        await WriteAsync(edge, TraceRecords.Request(edge, Guid.NewGuid(), 3, 4, at: at));
        Assert.Equal(12, await database.ScalarAsync("SELECT count(*) FROM routing_events_default WHERE origin_edge = @e", ("e", edge)));

        Assert.Equal([Partition(day)], await RoutingPartitions.EnsureAsync(database.ConnectionString, day, 1, CancellationToken.None));

        Assert.Equal(0, await database.ScalarAsync("SELECT count(*) FROM routing_events_default WHERE origin_edge = @e", ("e", edge)));
        Assert.Equal(12, await database.ScalarAsync($"SELECT count(*) FROM {Partition(day)} WHERE origin_edge = @e", ("e", edge)));
        Assert.Equal(12, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE origin_edge = @e", ("e", edge)));
    }

    [Fact]
    public async Task The_views_answer_the_common_questions()
    {
        const string edge = "edge-views";
        var request = Guid.NewGuid();
        var at = DateTimeOffset.UtcNow.AddMinutes(-1);
        var records = TraceRecords.Request(edge, request, positions: 4, layers: 2, at: at, remoteEdge: "edge-peer").ToList();
        await using (var writer = new TraceWriter(database.Options(edge)))
        {
            writer.Start();
            records.ForEach(writer.Add);
            writer.Add(new RequestSummary
            {
                RequestId = request, WorkloadTag = "intent", PromptTokens = 3, GeneratedTokens = 1, Status = RequestStatus.Completed,
                ReceivedAt = at.AddSeconds(-1), FirstTokenAt = at, CompletedAt = at.AddSeconds(1), PlacementVersion = 3,
                Communication = new RequestCommunication(6, 4.5, 12288, 1),
            });
            foreach (var (generated, status, communication) in new[]
            {
                (4, RequestStatus.Completed, new RequestCommunication(2, 1.5, 4096, 0)),
                (2, RequestStatus.Failed, new RequestCommunication(9, 9, 99999, 2)),
                (8, RequestStatus.Completed, (RequestCommunication?)null),
            })
            {
                writer.Add(new RequestSummary
                {
                    RequestId = Guid.NewGuid(), PromptTokens = 3, GeneratedTokens = generated, Status = status,
                    ReceivedAt = at.AddSeconds(-1), CompletedAt = at.AddSeconds(1), PlacementVersion = 3, Communication = communication,
                });
            }

            await writer.FlushAsync(CancellationToken.None);
        }

        // Even positions send their second expert to edge-peer: 4 of 8 token-layers remote, 12 of 16 expert calls local.
        var local = Assert.Single(await database.RowsAsync(
            "SELECT sum(token_layers), sum(local_token_layers), sum(expert_calls), sum(local_expert_calls) FROM local_ratio_by_placement WHERE origin_edge = @e", ("e", edge)));
        Assert.Equal([8m, 4m, 16m, 12m], local.Select(v => Convert.ToDecimal(v, System.Globalization.CultureInfo.InvariantCulture)));

        var path = await database.RowsAsync(
            "SELECT position, layer, rank, expert, served_by, remote_call, workload_tag FROM request_path WHERE request_id = @id ORDER BY position, layer, rank", ("id", request));
        Assert.Equal(16, path.Count);
        Assert.Equal([0, (short)0, 1, (short)0, edge, false, "intent"], path[0]);
        Assert.Equal([0, (short)0, 2, (short)8, "edge-peer", true, "intent"], path[1]);

        var pairs = await database.RowsAsync(
            "SELECT layer, expert_a, expert_b, together FROM expert_coactivation WHERE origin_edge = @e ORDER BY layer, expert_a", ("e", edge));
        Assert.Equal(records.Count, pairs.Sum(p => (long)p[3]));
        Assert.All(pairs, p => Assert.Equal((short)((short)p[1] + 8), (short)p[2]));

        var popularity = await database.RowsAsync(
            "SELECT sum(activations), min(rank_in_layer), sum(share_of_layer) FROM expert_popularity_hourly WHERE origin_edge = @e GROUP BY hour, layer", ("e", edge));
        Assert.All(popularity, p => Assert.Equal(1.0, (double)p[2], 6));
        Assert.Equal(records.Count * 2, popularity.Sum(p => Convert.ToInt64(p[0], System.Globalization.CultureInfo.InvariantCulture)));

        var overview = Assert.Single(await database.RowsAsync(
            "SELECT token_layers, remote_token_layers, duration_ms, time_to_first_token_ms FROM request_overview WHERE request_id = @id", ("id", request)));
        Assert.Equal([8L, 4L, 2000.0, 1000.0], overview);
        Assert.Equal([6, 4.5, 12288L, 1], Assert.Single(await database.RowsAsync(
            "SELECT remote_batches, remote_batch_share, remote_bytes, batch_retries FROM request_overview WHERE request_id = @id", ("id", request))));

        // Completed requests that recorded it: the failed one and the one from before the columns are left out.
        var byPlacement = Assert.Single(await database.RowsAsync(
            "SELECT placement_version, requests, generated_tokens, remote_batches, remote_bytes, batch_retries, remote_batches_per_token, remote_bytes_per_token FROM communication_by_placement WHERE origin_edge = @e",
            ("e", edge)));
        Assert.Equal([3, 2L, 5L, 6.0, 16384m, 1L, 1.2, 16384 / 5.0], byPlacement);
    }

    [Fact]
    public async Task Activation_history_sums_the_window_with_exponential_decay()
    {
        var to = new DateTimeOffset(2026, 11, 20, 12, 0, 0, TimeSpan.Zero);
        await database.ExecuteAsync("""
            INSERT INTO activation_counts (bucket, origin_edge, layer, expert, count) VALUES
                ('2026-11-20 11:59:00+00', 'edge-h1', 0, 5, 60),
                ('2026-11-20 11:00:00+00', 'edge-h1', 0, 5, 100),
                ('2026-11-20 10:00:00+00', 'edge-h1', 0, 5, 400),
                ('2026-11-20 09:00:00+00', 'edge-h1', 0, 5, 1000000),
                ('2026-11-20 11:30:00+00', 'edge-h2', 1, 7, 10)
            """);
        var history = new ActivationHistory(database.ConnectionString);

        var rows = await history.ReadAsync(to.AddHours(-2.5), to, TimeSpan.FromHours(1), CancellationToken.None);

        var h1 = Assert.Single(rows, r => r.OriginEdge == "edge-h1");
        Assert.Equal((0, 5, 560L), (h1.Layer, h1.Expert, h1.Count));
        Assert.Equal((60 * Math.Pow(0.5, 1 / 60.0)) + 50 + 100, h1.Weight, 6);
        var h2 = Assert.Single(rows, r => r.OriginEdge == "edge-h2");
        Assert.Equal(10 * Math.Sqrt(0.5), h2.Weight, 6);

        var flat = await history.ReadAsync(to.AddHours(-2.5), to, null, CancellationToken.None);
        Assert.Equal(560.0, Assert.Single(flat, r => r.OriginEdge == "edge-h1").Weight, 6);

        var dense = await history.ReadDenseAsync(["edge-h2", "edge-h1"], 2, 8, to.AddHours(-2.5), to, null, CancellationToken.None);
        Assert.Equal(560.0, dense[1][0][5]);
        Assert.Equal(10.0, dense[0][1][7]);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => history.ReadAsync(to.AddHours(-1), to, TimeSpan.Zero, CancellationToken.None));
    }

    [Fact]
    public async Task The_EF_model_reads_routing_events_and_stores_placements_with_one_active()
    {
        const string edge = "edge-ef";
        var request = Guid.NewGuid();
        await WriteAsync(edge, TraceRecords.Request(edge, request, 2, 3, remoteEdge: "edge-peer"));

        await using (var db = DanceMoEDbContext.Create(database.ConnectionString))
        {
            var events = await db.RoutingEvents.Where(r => r.RequestId == request).OrderBy(r => r.Position).ThenBy(r => r.Layer).ToListAsync();
            Assert.Equal(6, events.Count);
            Assert.Equal(["edge-ef", "edge-peer"], events[0].ServedBy);
            Assert.True(events[0].Remote);
            Assert.Equal(2, events[0].Experts.Length);

            var placement = new PlacementVersion { Version = 1, CreatedAt = DateTimeOffset.UtcNow, Algorithm = "dancemoe", PredictedCost = 1.5, InputsDigest = "sha256:x", IsActive = true };
            placement.Assignments.Add(new PlacementAssignment { Layer = 0, Expert = 3, EdgeId = edge });
            placement.Assignments.Add(new PlacementAssignment { Layer = 0, Expert = 3, EdgeId = "edge-peer" });
            db.Placements.Add(placement);
            await db.SaveChangesAsync();
        }

        await using (var db = DanceMoEDbContext.Create(database.ConnectionString))
        {
            Assert.Equal(2, await db.PlacementAssignments.CountAsync(a => a.PlacementVersion == 1));
            db.Placements.Add(new PlacementVersion { Version = 2, CreatedAt = DateTimeOffset.UtcNow, Algorithm = "eplb", InputsDigest = "sha256:y", IsActive = true });
            var ex = await Assert.ThrowsAsync<DbUpdateException>(() => db.SaveChangesAsync());
            Assert.Equal(PostgresErrorCodes.UniqueViolation, Assert.IsType<PostgresException>(ex.InnerException).SqlState);
        }
    }

    [Fact]
    public async Task Rows_PostgreSQL_refuses_as_data_are_set_aside_and_the_rest_of_their_batch_is_written()
    {
        const string edge = "edge-refused";
        var spill = database.NewSpillDirectory();

        // Stands for data the checks at Add let through and PostgreSQL refuses.
        await database.ExecuteAsync("ALTER TABLE routing_events ADD CONSTRAINT ck_test_refused CHECK (origin_edge <> 'edge-refused' OR layer <> 777)");
        var request = Guid.NewGuid();
        var records = TraceRecords.Request(edge, request, positions: 50, layers: 2).ToList();
        records.Insert(37, TraceRecords.Routing(edge, request, 0, 777));
        records.Insert(71, TraceRecords.Routing(edge, request, 1, 777));
        var options = database.Options(edge, spill);
        options.FlushInterval = TimeSpan.FromSeconds(30);
        await using (var writer = new TraceWriter(options))
        {
            records.ForEach(writer.Add);
            writer.Start();
            await writer.FlushAsync(CancellationToken.None);
            Assert.Equal(records.Count - 2, writer.State.RowsWritten);
            Assert.Equal(2, writer.State.Quarantined);
        }

        Assert.Equal(records.Count - 2, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE origin_edge = @e", ("e", edge)));
        Assert.Equal(2, Directory.GetFiles(spill, "*.rejected").Length);
        Assert.Empty(await database.RollUpDifferencesAsync(edge));
    }

    private static string Partition(DateOnly day) => $"routing_events_p{day:yyyyMMdd}";

    private async Task WriteAsync(string edge, IEnumerable<RoutingRecord> records)
    {
        await using var writer = new TraceWriter(database.Options(edge));
        writer.Start();
        foreach (var record in records)
        {
            writer.Add(record);
        }

        await writer.FlushAsync(CancellationToken.None);
    }
}
