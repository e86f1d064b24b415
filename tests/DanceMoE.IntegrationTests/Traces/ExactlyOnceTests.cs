using DanceMoE.Traces;
using Microsoft.Extensions.Logging;

namespace DanceMoE.IntegrationTests.Traces;

public sealed class ExactlyOnceTests(TraceDatabase database) : IClassFixture<TraceDatabase>
{
    [Fact]
    public async Task A_request_served_again_by_a_restarted_edge_stores_and_counts_its_rows_once()
    {
        const string edge = "edge-served-twice";
        var request = Guid.NewGuid();
        var first = TraceRecords.Request(edge, request, positions: 20, layers: 4, at: DateTimeOffset.UtcNow.AddSeconds(-30)).ToList();
        var again = TraceRecords.Request(edge, request, positions: 20, layers: 4, at: DateTimeOffset.UtcNow.AddSeconds(-1)).ToList();
        await ServeTwiceAsync(edge, first, again);

        Assert.Equal(first.Count, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE request_id = @r", ("r", request)));
        Assert.Equal(first.Count * 2, await database.ScalarAsync("SELECT sum(count) FROM activation_counts WHERE origin_edge = @e", ("e", edge)));
        Assert.Empty(await database.RollUpDifferencesAsync(edge));
    }

    [Fact]
    public async Task A_completed_request_served_again_on_a_later_day_stores_and_counts_nothing_the_second_time()
    {
        const string edge = "edge-next-day";
        var request = Guid.NewGuid();
        var yesterday = DateTimeOffset.UtcNow.AddDays(-1);
        var first = TraceRecords.Request(edge, request, positions: 8, layers: 3, at: yesterday).ToList();
        var again = TraceRecords.Request(edge, request, positions: 8, layers: 3, at: DateTimeOffset.UtcNow).ToList();
        await ServeTwiceAsync(edge, first, again, new RequestSummary
        {
            RequestId = request, PromptTokens = 4, GeneratedTokens = 4, Status = RequestStatus.Completed,
            ReceivedAt = yesterday.AddSeconds(-1), CompletedAt = yesterday,
        });

        Assert.Equal(first.Count, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE request_id = @r", ("r", request)));
        Assert.Equal(first.Count * 2, await database.ScalarAsync("SELECT sum(count) FROM activation_counts WHERE origin_edge = @e", ("e", edge)));
        Assert.Empty(await database.RollUpDifferencesAsync(edge));
    }

    [Fact]
    public async Task Both_servings_of_a_request_in_one_batch_store_and_count_one_row_per_position_and_layer()
    {
        const string edge = "edge-twice-in-a-batch";
        var request = Guid.NewGuid();
        var other = Guid.NewGuid();
        var first = TraceRecords.Request(edge, request, positions: 12, layers: 3, at: DateTimeOffset.UtcNow.AddSeconds(-20)).ToList();
        var again = TraceRecords.Request(edge, request, positions: 12, layers: 3, at: DateTimeOffset.UtcNow.AddSeconds(-2)).ToList();
        var unrelated = TraceRecords.Request(edge, other, positions: 5, layers: 3).ToList();
        await using var writer = new TraceWriter(database.Options(edge));

        first.Concat(unrelated).Concat(again).ToList().ForEach(writer.Add);
        writer.Start();
        await writer.FlushAsync(CancellationToken.None);

        Assert.Equal(first.Count + unrelated.Count, writer.State.RowsWritten);
        Assert.Equal(again.Count, writer.State.RowsDuplicate);
        Assert.Equal(first.Count, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE request_id = @r", ("r", request)));
        Assert.Equal((first.Count + unrelated.Count) * 2, await database.ScalarAsync("SELECT sum(count) FROM activation_counts WHERE origin_edge = @e", ("e", edge)));
        Assert.Empty(await database.RollUpDifferencesAsync(edge));
    }

    [Fact]
    public async Task A_day_without_its_partition_yet_also_keeps_one_row_per_key_before_and_after_the_partition_is_made()
    {
        const string edge = "edge-old-day";
        var request = Guid.NewGuid();
        var day = new DateTimeOffset(2001, 2, 3, 10, 0, 0, TimeSpan.Zero);
        var first = TraceRecords.Request(edge, request, positions: 6, layers: 2, at: day).ToList();
        var again = TraceRecords.Request(edge, request, positions: 6, layers: 2, at: day.AddMinutes(5)).ToList();
        await using (var writer = new TraceWriter(database.Options(edge)))
        {
            writer.Start();
            first.ForEach(writer.Add);
            await writer.FlushAsync(CancellationToken.None);
            again.ForEach(writer.Add);
            await writer.FlushAsync(CancellationToken.None);
            Assert.Equal(again.Count, writer.State.RowsDuplicate);
        }

        Assert.Equal(first.Count, await database.ScalarAsync("SELECT count(*) FROM routing_events_default WHERE request_id = @r", ("r", request)));

        Assert.Equal(["routing_events_p20010203"], await RoutingPartitions.EnsureAsync(database.ConnectionString, new DateOnly(2001, 2, 3), 1, CancellationToken.None));
        Assert.Equal(first.Count, await database.ScalarAsync("SELECT count(*) FROM routing_events_p20010203 WHERE request_id = @r", ("r", request)));

        await using (var writer = new TraceWriter(database.Options(edge)))
        {
            writer.Start();
            again.ForEach(writer.Add);
            await writer.FlushAsync(CancellationToken.None);
            Assert.Equal(0, writer.State.RowsWritten);
        }

        Assert.Equal(first.Count, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE request_id = @r", ("r", request)));
        Assert.Empty(await database.RollUpDifferencesAsync(edge));
    }

    [Fact]
    public async Task Every_partition_of_routing_events_has_a_unique_key_on_request_position_and_layer()
    {
        await RoutingPartitions.EnsureAsync(database.ConnectionString, new DateOnly(2002, 5, 6), 2, CancellationToken.None);

        var partitions = await database.ScalarAsync("SELECT count(*) FROM pg_inherits WHERE inhparent = 'routing_events'::regclass");
        var keyed = await database.ScalarAsync("""
            SELECT count(*) FROM pg_inherits i JOIN pg_index x ON x.indrelid = i.inhrelid
            WHERE i.inhparent = 'routing_events'::regclass AND x.indisunique
              AND pg_get_indexdef(x.indexrelid) LIKE '%(request_id, "position", layer)'
            """);
        Assert.True(partitions >= 3, $"{partitions} partitions");
        Assert.Equal(partitions, keyed);
    }

    [Fact]
    public async Task Another_request_under_a_stored_request_id_is_reported_with_both_requests_and_a_retry_is_not()
    {
        var reused = Guid.NewGuid();
        var reusedAlike = Guid.NewGuid();
        var retried = Guid.NewGuid();
        var at = DateTimeOffset.UtcNow.AddSeconds(-10);
        RequestSummary Summary(Guid id, int promptTokens, string? tag, UInt128 fingerprint) => new()
        {
            RequestId = id, WorkloadTag = tag, PromptTokens = promptTokens, Fingerprint = fingerprint, GeneratedTokens = 4,
            Status = RequestStatus.Completed, ReceivedAt = at.AddSeconds(-1), CompletedAt = at,
        };

        await using (var first = new TraceWriter(database.Options("edge-id-first")))
        {
            first.Start();
            TraceRecords.Request("edge-id-first", reused, positions: 8, layers: 2, at: at).ToList().ForEach(first.Add);
            first.Add(Summary(reused, 5, "law", 1));
            first.Add(Summary(reusedAlike, 5, "law", 2));
            first.Add(Summary(retried, 5, "law", 3));
            await first.FlushAsync(CancellationToken.None);
        }

        var log = new RecordingLogger<TraceWriter>();
        await using var second = new TraceWriter(database.Options("edge-id-second"), log);
        second.Start();
        TraceRecords.Request("edge-id-second", reused, positions: 3, layers: 2).ToList().ForEach(second.Add);
        second.Add(Summary(reused, 3, null, 4));
        // The same length and tag: only the fingerprint (other prompt tokens or settings) tells it from a retry.
        second.Add(Summary(reusedAlike, 5, "law", 5));
        second.Add(Summary(retried, 5, "law", 3));
        await second.FlushAsync(CancellationToken.None);

        Assert.Equal(2, second.State.RequestIdConflicts);
        Assert.Equal(0, second.State.RequestsWritten);
        Assert.Equal(0, second.State.RowsWritten);
        const string Stored = "is stored for another request (a prompt of 5 tokens, workload tag 'law', from edge-id-first); ";
        const string NotStored = " and its routing rows are not stored: a request id must name one request";
        Assert.Equivalent(
            new[]
            {
                $"Trace writer for edge-id-second: request id {reused} {Stored}this one (a prompt of 3 tokens, no workload tag){NotStored}",
                $"Trace writer for edge-id-second: request id {reusedAlike} {Stored}this one (a prompt of 5 tokens, workload tag 'law', with other prompt tokens or settings){NotStored}",
            },
            log.Entries.Where(e => e.Level == LogLevel.Warning).Select(e => e.Message).ToArray(),
            strict: true);
        var stored = Assert.Single(await database.RowsAsync("SELECT origin_edge, prompt_tokens FROM requests WHERE id = @r", ("r", reused)));
        Assert.Equal(["edge-id-first", 5], stored);
        Assert.Equal(8 * 2, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE request_id = @r", ("r", reused)));
    }

    [Fact]
    public async Task Under_the_id_of_a_failed_request_another_requests_rows_are_not_stored_and_a_retrys_further_rows_and_completed_summary_are()
    {
        var reused = Guid.NewGuid();
        var retried = Guid.NewGuid();
        var at = DateTimeOffset.UtcNow.AddSeconds(-10);
        IEnumerable<RoutingRecord> Rows(string edge, Guid id, int positions, UInt128 fingerprint) =>
            TraceRecords.Request(edge, id, positions, layers: 2, at: at).Select(r => r with { RequestFingerprint = fingerprint });
        RequestSummary Summary(Guid id, RequestStatus status, UInt128 fingerprint) => new()
        {
            RequestId = id, PromptTokens = 3, Fingerprint = fingerprint, GeneratedTokens = status == RequestStatus.Completed ? 5 : 0, Status = status,
            Error = status == RequestStatus.Failed ? "expert 1.2 failed on edge-3" : null, ReceivedAt = at.AddSeconds(-1), CompletedAt = at,
        };

        // Both failed after 4 of their 8 positions (a peer died): their summaries and rows so far are stored.
        await using (var first = new TraceWriter(database.Options("edge-failed-first")))
        {
            first.Start();
            Rows("edge-failed-first", reused, 4, 1).Concat(Rows("edge-failed-first", retried, 4, 3)).ToList().ForEach(first.Add);
            first.Add(Summary(reused, RequestStatus.Failed, 1));
            first.Add(Summary(retried, RequestStatus.Failed, 3));
            await first.FlushAsync(CancellationToken.None);
        }

        await using var second = new TraceWriter(database.Options("edge-failed-second"));
        second.Start();
        Rows("edge-failed-second", reused, 8, 2).ToList().ForEach(second.Add);
        second.Add(Summary(reused, RequestStatus.Completed, 2));
        Rows("edge-failed-second", retried, 8, 3).ToList().ForEach(second.Add);
        second.Add(Summary(retried, RequestStatus.Completed, 3));
        await second.FlushAsync(CancellationToken.None);

        Assert.Equal(1, second.State.RequestIdConflicts);
        Assert.Equal(4 * 2, second.State.RowsWritten);
        // The history keeps one request per id: the first's 4 positions; the retry's later positions complete its own.
        Assert.Equal(4 * 2, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE request_id = @r", ("r", reused)));
        Assert.Equal(0, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE request_id = @r AND origin_edge <> 'edge-failed-first'", ("r", reused)));
        Assert.Equal(8 * 2, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE request_id = @r", ("r", retried)));

        // The completed retry's summary replaced the failed one of the same request; another request's did not.
        Assert.Equal(1, await database.ScalarAsync("SELECT count(*) FROM requests WHERE id = @r AND status = 'completed' AND generated_tokens = 5 AND origin_edge = 'edge-failed-second' AND error IS NULL", ("r", retried)));
        Assert.Equal(1, await database.ScalarAsync("SELECT count(*) FROM requests WHERE id = @r AND status = 'failed' AND origin_edge = 'edge-failed-first'", ("r", reused)));

        // A failed serving's summary that arrives after the completed one (a spill replayed late) does not replace it.
        await using (var late = new TraceWriter(database.Options("edge-failed-late")))
        {
            late.Start();
            late.Add(Summary(retried, RequestStatus.Failed, 3) with { Error = "a peer died" });
            await late.FlushAsync(CancellationToken.None);
        }

        Assert.Equal(1, await database.ScalarAsync("SELECT count(*) FROM requests WHERE id = @r AND status = 'completed' AND origin_edge = 'edge-failed-second'", ("r", retried)));
    }

    /// <summary>The first serving's rows (and summary) by one writer, then the second's by a restarted one, which stores none of them.</summary>
    private async Task ServeTwiceAsync(string edge, List<RoutingRecord> first, List<RoutingRecord> again, RequestSummary? firstSummary = null)
    {
        await using (var writer = new TraceWriter(database.Options(edge)))
        {
            writer.Start();
            first.ForEach(writer.Add);
            if (firstSummary is not null)
            {
                writer.Add(firstSummary);
            }

            await writer.FlushAsync(CancellationToken.None);
        }

        await using var restarted = new TraceWriter(database.Options(edge));
        restarted.Start();
        again.ForEach(restarted.Add);
        await restarted.FlushAsync(CancellationToken.None);
        Assert.Equal(0, restarted.State.RowsWritten);
        Assert.Equal(again.Count, restarted.State.RowsDuplicate);
    }
}
