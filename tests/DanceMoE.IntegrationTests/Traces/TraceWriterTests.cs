using DanceMoE.Traces;

namespace DanceMoE.IntegrationTests.Traces;

public sealed class TraceWriterTests(TraceDatabase database) : IClassFixture<TraceDatabase>
{
    /// <summary>Nothing listens there: every connection attempt is refused at once.</summary>
    private const string ClosedPort = "Host=127.0.0.1;Port=1;Database=none;Username=none;Password=none";

    [Fact]
    public async Task Rows_written_equal_rows_added_with_their_exact_contents()
    {
        const string edge = "edge-exact";
        var request = Guid.NewGuid();
        var added = TraceRecords.Request(edge, request, positions: 40, layers: 5, remoteEdge: "edge-other").ToList();
        var received = DateTimeOffset.UtcNow.AddSeconds(-2);
        var summary = new RequestSummary
        {
            RequestId = request,
            WorkloadTag = "law",
            PromptTokens = 32,
            Fingerprint = new UInt128(0x0102030405060708, 0x090A0B0C0D0E0F10),
            GeneratedTokens = 8,
            Status = RequestStatus.Completed,
            PlacementVersion = 2,
            ReceivedAt = received,
            FirstTokenAt = received.AddMilliseconds(300),
            CompletedAt = received.AddSeconds(1),
        };

        await using (var writer = new TraceWriter(database.Options(edge)))
        {
            writer.Start();
            foreach (var record in added)
            {
                writer.Add(record);
            }

            writer.Add(summary);
            await writer.FlushAsync(CancellationToken.None);
            var state = writer.State;
            Assert.Equal(added.Count, state.RowsAdded);
            Assert.Equal(added.Count, state.RowsWritten);
            Assert.Equal(0, state.RowsDuplicate);
            Assert.Equal(1, state.RequestsWritten);
            Assert.Equal(0, state.Pending);
            Assert.Equal(0, state.Spilled);
            Assert.True(state.DatabaseReachable);
        }

        var rows = await database.RowsAsync(
            "SELECT position, layer, origin_edge, experts, gate_weights, served_by, placement_version, remote FROM routing_events WHERE request_id = @id ORDER BY position, layer",
            ("id", request));
        Assert.Equal(added.Count, rows.Count);
        foreach (var (record, row) in added.OrderBy(r => r.Position).ThenBy(r => r.Layer).Zip(rows))
        {
            Assert.Equal(record.Position, (int)row[0]);
            Assert.Equal(record.Layer, (short)row[1]);
            Assert.Equal(edge, (string)row[2]);
            Assert.Equal(record.Experts.Select(e => (short)e), (short[])row[3]);
            Assert.Equal(record.GateWeights, (float[])row[4]);
            Assert.Equal(record.ServedBy, (string[])row[5]);
            Assert.Equal(record.PlacementVersion, (int)row[6]);
            Assert.Equal(record.ServedBy.Any(s => s != edge), (bool)row[7]);
        }

        var requestRow = Assert.Single(await database.RowsAsync(
            "SELECT origin_edge, workload_tag, prompt_tokens, generated_tokens, status, placement_version, received_at, first_token_at, completed_at, error, encode(fingerprint, 'hex') FROM requests WHERE id = @id",
            ("id", request)));
        Assert.Equal("0102030405060708090a0b0c0d0e0f10", requestRow[10]);
        Assert.Equal([edge, "law", 32, 8, "completed", 2], requestRow[..6]);
        Assert.Equal(Micros(summary.ReceivedAt), Micros((DateTime)requestRow[6]));
        Assert.Equal(Micros(summary.FirstTokenAt!.Value), Micros((DateTime)requestRow[7]));
        Assert.Equal(Micros(summary.CompletedAt), Micros((DateTime)requestRow[8]));
        Assert.Equal(DBNull.Value, requestRow[9]);

        Assert.Equal(added.Sum(r => r.Experts.Count), await database.ScalarAsync("SELECT sum(count) FROM activation_counts WHERE origin_edge = @e", ("e", edge)));
        Assert.Empty(await database.RollUpDifferencesAsync(edge));
    }

    [Fact]
    public async Task Spilled_rows_are_replayed_by_the_next_writer_of_the_edge_exactly_once()
    {
        const string edge = "edge-restart";
        var spill = database.NewSpillDirectory();
        var added = TraceRecords.Request(edge, Guid.NewGuid(), positions: 50, layers: 10).ToList();

        // PostgreSQL unreachable: 100 rows fit in memory, the rest spill; stopping spills the 100 too.
        var down = database.Options(edge, spill, ClosedPort);
        down.BufferCapacity = 100;
        down.BatchSize = 50;
        down.ShutdownTimeout = TimeSpan.FromMilliseconds(200);
        await using (var writer = new TraceWriter(down))
        {
            writer.Start();
            foreach (var record in added)
            {
                writer.Add(record);
            }

            Assert.Equal(added.Count - 100, writer.State.Spilled);
            Assert.Equal(100, writer.State.Pending);
            await writer.DisposeAsync();
            Assert.Equal(added.Count, writer.State.Spilled);
            Assert.Equal(0, writer.State.RowsWritten);
        }

        Assert.NotEmpty(Directory.GetFiles(spill, "*.spill"));
        await using (var writer = new TraceWriter(database.Options(edge, spill)))
        {
            Assert.Equal(added.Count, writer.State.Spilled);
            writer.Start();
            await writer.FlushAsync(CancellationToken.None);
            Assert.Equal(added.Count, writer.State.RowsWritten);
            Assert.Equal(0, writer.State.Spilled);
        }

        Assert.Empty(Directory.GetFiles(spill, "*.spill"));
        Assert.Equal(added.Count, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE origin_edge = @e", ("e", edge)));
        Assert.Equal(added.Count, await database.ScalarAsync("SELECT count(DISTINCT (request_id, position, layer)) FROM routing_events WHERE origin_edge = @e", ("e", edge)));
        Assert.Empty(await database.RollUpDifferencesAsync(edge));
    }

    [Fact]
    public async Task Spilled_rows_and_summaries_replay_with_their_fingerprints_and_communication_and_spill_files_from_before_still_replay()
    {
        const string edge = "edge-fingerprint";
        var spill = database.NewSpillDirectory();
        var at = DateTimeOffset.UtcNow.AddSeconds(-5);
        RequestSummary Summary(UInt128? fingerprint) => new()
        {
            RequestId = Guid.NewGuid(), PromptTokens = 3, Fingerprint = fingerprint, GeneratedTokens = 2, Status = RequestStatus.Completed,
            ReceivedAt = at, CompletedAt = at.AddSeconds(1),
        };
        var fresh = Summary(0xABCDEF) with { Communication = new RequestCommunication(5, 2.5, 4096, 1) };
        var old = Summary(0x123456);
        var none = Summary(null);
        var rows = TraceRecords.Request(edge, fresh.RequestId, positions: 2, layers: 2, at: at).Select(r => r with { RequestFingerprint = 0xABCDEF }).ToList();
        var down = database.Options(edge, spill, ClosedPort);
        down.ShutdownTimeout = TimeSpan.Zero;
        await using (var writer = new TraceWriter(down))
        {
            rows.ForEach(writer.Add);
            writer.Add(fresh);
            writer.Add(old);
            writer.Add(none);
        }

        // An edge from before fingerprints wrote routing frames of kind 1 and request frames of kind 2: the same fields
        // without the fingerprint's 17 bytes at the end (a request's without its communication's 25 bytes too). Here the
        // first two rows and the second summary are such frames; the third summary is of kind 3, from before communication.
        var segment = Assert.Single(Directory.GetFiles(spill, "*.spill"));
        var bytes = File.ReadAllBytes(segment);
        var rewritten = new List<byte>(bytes[..8]);
        var frame = 0;
        for (var offset = 8; offset < bytes.Length; frame++)
        {
            var length = BitConverter.ToInt32(bytes, offset);
            var body = bytes[(offset + 4)..(offset + 4 + length)];
            offset += 4 + length;
            if (frame is 0 or 1)
            {
                Assert.Equal(4, body[0]);
                body = [1, .. body[1..^17]];
            }
            else if (frame is 5 or 6)
            {
                Assert.Equal(5, body[0]);
                body = frame == 5 ? [2, .. body[1..^(17 + 25)]] : [3, .. body[1..^25]];
            }

            rewritten.AddRange(BitConverter.GetBytes(body.Length));
            rewritten.AddRange(body);
        }

        Assert.Equal(rows.Count + 3, frame);
        File.WriteAllBytes(segment, [.. rewritten]);

        await using (var writer = new TraceWriter(database.Options(edge, spill)))
        {
            Assert.Equal(rows.Count + 3, writer.State.Spilled);
            writer.Start();
            await writer.FlushAsync(CancellationToken.None);
            Assert.Equal(3, writer.State.RequestsWritten);
            Assert.Equal(rows.Count, writer.State.RowsWritten);
        }

        Assert.Empty(Directory.GetFiles(spill, "*.spill*"));
        foreach (var (summary, expected) in new[] { (fresh, new string('0', 26) + "abcdef"), (old, null), (none, null) })
        {
            Assert.Equal((object?)expected ?? DBNull.Value, Assert.Single(await database.RowsAsync(
                "SELECT encode(fingerprint, 'hex') FROM requests WHERE id = @id", ("id", summary.RequestId)))[0]);
        }

        Assert.Equal([5, 2.5, 4096L, 1], Assert.Single(await database.RowsAsync(
            "SELECT remote_batches, remote_batch_share, remote_bytes, batch_retries FROM requests WHERE id = @id", ("id", fresh.RequestId))));
        Assert.Equal(2, await database.ScalarAsync("SELECT count(*) FROM requests WHERE id IN (@a, @b) AND remote_bytes IS NULL", ("a", old.RequestId), ("b", none.RequestId)));
    }

    [Fact]
    public async Task A_replayed_spill_file_writes_and_counts_nothing_twice()
    {
        const string edge = "edge-replay";
        var spill = database.NewSpillDirectory();
        var copy = database.NewSpillDirectory();
        var added = TraceRecords.Request(edge, Guid.NewGuid(), positions: 30, layers: 4).ToList();
        var down = database.Options(edge, spill, ClosedPort);
        down.ShutdownTimeout = TimeSpan.FromMilliseconds(100);
        await using (var writer = new TraceWriter(down))
        {
            foreach (var record in added)
            {
                writer.Add(record);
            }
        }

        // Keep the spill files, as a crash between commit and delete would.
        Directory.CreateDirectory(copy);
        foreach (var file in Directory.GetFiles(spill, "*.spill"))
        {
            File.Copy(file, Path.Combine(copy, Path.GetFileName(file)));
        }

        await using (var writer = new TraceWriter(database.Options(edge, spill)))
        {
            writer.Start();
            await writer.FlushAsync(CancellationToken.None);
            Assert.Equal(added.Count, writer.State.RowsWritten);
        }

        var activations = await database.ScalarAsync("SELECT sum(count) FROM activation_counts WHERE origin_edge = @e", ("e", edge));
        Assert.Equal(added.Count * 2, activations);

        await using (var writer = new TraceWriter(database.Options(edge, copy)))
        {
            writer.Start();
            await writer.FlushAsync(CancellationToken.None);
            Assert.Equal(0, writer.State.RowsWritten);
            Assert.Equal(added.Count, writer.State.RowsDuplicate);
        }

        Assert.Equal(added.Count, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE origin_edge = @e", ("e", edge)));
        Assert.Equal(activations, await database.ScalarAsync("SELECT sum(count) FROM activation_counts WHERE origin_edge = @e", ("e", edge)));
        Assert.Empty(await database.RollUpDifferencesAsync(edge));
    }

    [Fact]
    public async Task A_record_added_again_in_a_fresh_batch_is_stored_and_counted_once()
    {
        const string edge = "edge-twice-added";
        var at = DateTimeOffset.UtcNow.AddSeconds(-1);
        var first = TraceRecords.Request(edge, Guid.NewGuid(), positions: 10, layers: 3, at: at).ToList();
        var second = TraceRecords.Request(edge, Guid.NewGuid(), positions: 10, layers: 3, at: at).ToList();
        await using var writer = new TraceWriter(database.Options(edge));
        writer.Start();
        first.ForEach(writer.Add);
        await writer.FlushAsync(CancellationToken.None);

        // The same keys again, mixed with new rows in one batch: the insert skips the stored ones and counts only the new.
        first.Concat(second).ToList().ForEach(writer.Add);
        await writer.FlushAsync(CancellationToken.None);

        Assert.Equal(first.Count + second.Count, writer.State.RowsWritten);
        Assert.Equal(first.Count, writer.State.RowsDuplicate);
        Assert.Equal(first.Count + second.Count, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE origin_edge = @e", ("e", edge)));
        Assert.Equal((first.Count + second.Count) * 2, await database.ScalarAsync("SELECT sum(count) FROM activation_counts WHERE origin_edge = @e", ("e", edge)));
        Assert.Empty(await database.RollUpDifferencesAsync(edge));
    }

    [Fact]
    public async Task A_spill_file_torn_by_a_crash_replays_every_whole_record()
    {
        const string edge = "edge-torn";
        var spill = database.NewSpillDirectory();
        var added = TraceRecords.Request(edge, Guid.NewGuid(), positions: 10, layers: 2).ToList();
        var down = database.Options(edge, spill, ClosedPort);
        down.ShutdownTimeout = TimeSpan.Zero;
        await using (var writer = new TraceWriter(down))
        {
            added.ForEach(writer.Add);
        }

        // A crash in the middle of an append leaves half a record at the end of the segment.
        var segment = Assert.Single(Directory.GetFiles(spill, "*.spill"));
        await using (var file = new FileStream(segment, FileMode.Open))
        {
            file.SetLength(file.Length - 5);
        }

        await using (var writer = new TraceWriter(database.Options(edge, spill)))
        {
            Assert.Equal(added.Count - 1, writer.State.Spilled);
            writer.Start();
            await writer.FlushAsync(CancellationToken.None);
            Assert.Equal(added.Count - 1, writer.State.RowsWritten);
        }

        Assert.Empty(Directory.GetFiles(spill, "*.spill"));
        Assert.Equal(added.Count - 1, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE origin_edge = @e", ("e", edge)));
    }

    [Fact]
    public async Task A_damaged_spill_file_replays_the_records_before_the_damage_and_is_set_aside()
    {
        const string edge = "edge-damaged";
        var spill = database.NewSpillDirectory();
        var added = TraceRecords.Request(edge, Guid.NewGuid(), positions: 10, layers: 2).ToList();
        var down = database.Options(edge, spill, ClosedPort);
        down.ShutdownTimeout = TimeSpan.Zero;
        await using (var writer = new TraceWriter(down))
        {
            added.ForEach(writer.Add);
        }

        // Every frame has the same size here: break the length of the tenth.
        var segment = Assert.Single(Directory.GetFiles(spill, "*.spill"));
        var bytes = await File.ReadAllBytesAsync(segment);
        var frame = 4 + BitConverter.ToInt32(bytes, 8);
        BitConverter.TryWriteBytes(bytes.AsSpan(8 + (9 * frame), 4), -1);
        await File.WriteAllBytesAsync(segment, bytes);

        await using (var writer = new TraceWriter(database.Options(edge, spill)))
        {
            Assert.Equal(9, writer.State.Spilled);
            writer.Start();
            await writer.FlushAsync(CancellationToken.None);
            Assert.Equal(9, writer.State.RowsWritten);
        }

        Assert.Equal([Path.GetFileName(segment) + ".corrupt"], Directory.GetFiles(spill, "*.corrupt").Select(Path.GetFileName));
        Assert.Equal(9, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE origin_edge = @e", ("e", edge)));
    }

    [Fact]
    public async Task TryAdd_refuses_when_the_buffer_is_full_and_Add_spills_instead()
    {
        var options = database.Options("edge-full", connectionString: ClosedPort);
        options.BufferCapacity = 10;
        options.BatchSize = 10;
        options.ShutdownTimeout = TimeSpan.Zero;
        await using var writer = new TraceWriter(options);
        var records = TraceRecords.Request("edge-full", Guid.NewGuid(), positions: 12, layers: 1).ToList();
        Assert.All(records[..10], r => Assert.True(writer.TryAdd(r)));
        Assert.False(writer.TryAdd(records[10]));
        writer.Add(records[11]);
        Assert.Equal(10, writer.State.Pending);
        Assert.Equal(1, writer.State.Spilled);
        Assert.Equal(11, writer.State.RowsAdded);
    }

    [Fact]
    public async Task A_second_writer_for_the_same_edge_and_spill_directory_is_refused()
    {
        var spill = database.NewSpillDirectory();
        await using var first = new TraceWriter(database.Options("edge-twice", spill));
        var ex = Assert.Throws<InvalidOperationException>(() => new TraceWriter(database.Options("edge-twice", spill)));
        Assert.Contains("one writer per edge", ex.Message, StringComparison.Ordinal);
    }

    public static TheoryData<string, RoutingRecord> Malformed()
    {
        var good = TraceRecords.Routing("edge-bad", Guid.NewGuid(), 3, 2);
        return new TheoryData<string, RoutingRecord>
        {
            { "2 experts but 1 gate weights", good with { GateWeights = [1f] } },
            { "2 experts but 3 served-by entries", good with { ServedBy = ["edge-bad", "edge-bad", "edge-bad"] } },
            { "17 experts; a record holds 1..16", good with { Experts = [.. Enumerable.Range(0, 17)], GateWeights = new float[17], ServedBy = [.. Enumerable.Repeat("edge-bad", 17)] } },
            { "0 experts", good with { Experts = [], GateWeights = [], ServedBy = [] } },
            { "expert 4096 is outside 0..4095", good with { Experts = [1, 4096] } },
            { "expert -1 is outside", good with { Experts = [-1, 2] } },
            { "expert 5 appears twice", good with { Experts = [5, 5] } },
            { "layer 1024 is outside 0..1023", good with { Layer = 1024 } },
            { "layer -1 is outside", good with { Layer = -1 } },
            { "position -4 is outside", good with { Position = -4 } },
            { "position 1048576 is outside", good with { Position = 1 << 20 } },
            { "request id is empty", good with { RequestId = Guid.Empty } },
            { "placement version -1 is negative", good with { PlacementVersion = -1 } },
            { "gate weight of expert", good with { GateWeights = [float.NaN, 0.5f] } },
            { "served-by of expert", good with { ServedBy = ["edge-bad", ""] } },
            { "served-by of expert", good with { ServedBy = ["edge-bad", new string('x', 65)] } },
            { "served-by of expert", good with { ServedBy = ["edge-bad", "edge\0"] } },
            { "remote flag is True but served-by", good with { Remote = true } },
            { "recorded-at", good with { RecordedAt = new DateTimeOffset(1999, 1, 1, 0, 0, 0, TimeSpan.Zero) } },
        };
    }

    [Theory]
    [MemberData(nameof(Malformed))]
    public async Task Malformed_routing_records_are_rejected_at_Add_with_a_clear_error(string expected, RoutingRecord record)
    {
        await using var writer = new TraceWriter(database.Options("edge-bad"));
        var ex = Assert.Throws<InvalidTraceRecordException>(() => writer.Add(record));
        Assert.Contains(expected, ex.Message, StringComparison.Ordinal);
        Assert.Contains($"request {record.RequestId}", ex.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidTraceRecordException>(() => writer.TryAdd(record));
        Assert.Equal(2, writer.State.Rejected);
        Assert.Equal(0, writer.State.RowsAdded);
        Assert.Equal(0, writer.State.Pending);
    }

    [Fact]
    public async Task Malformed_request_summaries_are_rejected_and_long_errors_are_cut()
    {
        await using var writer = new TraceWriter(database.Options("edge-bad-request"));
        var now = DateTimeOffset.UtcNow;
        var good = new RequestSummary
        {
            RequestId = Guid.NewGuid(), PromptTokens = 1, GeneratedTokens = 1, Status = RequestStatus.Failed, ReceivedAt = now.AddSeconds(-1), CompletedAt = now,
        };
        Assert.Contains("completed at", Assert.Throws<InvalidTraceRecordException>(() => writer.Add(good with { CompletedAt = now.AddSeconds(-5) })).Message, StringComparison.Ordinal);
        Assert.Contains("workload tag has 129 characters", Assert.Throws<InvalidTraceRecordException>(() => writer.Add(good with { WorkloadTag = new string('t', 129) })).Message, StringComparison.Ordinal);
        Assert.Contains("workload tag contains U+000A", Assert.Throws<InvalidTraceRecordException>(() => writer.Add(good with { WorkloadTag = "forged\nline" })).Message, StringComparison.Ordinal);
        Assert.Contains("prompt tokens -1", Assert.Throws<InvalidTraceRecordException>(() => writer.Add(good with { PromptTokens = -1 })).Message, StringComparison.Ordinal);
        Assert.Contains("first token at", Assert.Throws<InvalidTraceRecordException>(() => writer.Add(good with { FirstTokenAt = now.AddSeconds(1) })).Message, StringComparison.Ordinal);
        Assert.Contains("status 9", Assert.Throws<InvalidTraceRecordException>(() => writer.Add(good with { Status = (RequestStatus)9 })).Message, StringComparison.Ordinal);
        foreach (var bad in new[] { new RequestCommunication(-1, 0, 0, 0), new RequestCommunication(1, 0, -4, 0), new RequestCommunication(1, 0, 0, -1), new RequestCommunication(2, 2.5, 8, 0), new RequestCommunication(2, double.NaN, 8, 0) })
        {
            Assert.Contains("communication", Assert.Throws<InvalidTraceRecordException>(() => writer.Add(good with { Communication = bad })).Message, StringComparison.Ordinal);
        }

        writer.Start();
        writer.Add(good with { Error = new string('e', 10_000) });
        await writer.FlushAsync(CancellationToken.None);
        Assert.Equal(TraceLimits.MaxErrorLength, await database.ScalarAsync("SELECT length(error) FROM requests WHERE id = @id", ("id", good.RequestId)));
        Assert.Equal(11, writer.State.Rejected);
    }

    [Fact]
    public void Options_are_validated_with_every_problem_named()
    {
        var options = new TraceWriterOptions
        {
            EdgeId = "",
            ConnectionString = "postgresql://u:p@h/db",
            BufferCapacity = 10,
            BatchSize = 20,
            FlushInterval = TimeSpan.Zero,
            MaxExpertsPerRecord = 300,
        };
        var ex = Assert.Throws<ArgumentException>(() => new TraceWriter(options));
        Assert.Contains("EdgeId", ex.Message, StringComparison.Ordinal);
        Assert.Contains("is a URI", ex.Message, StringComparison.Ordinal);
        Assert.Contains("BatchSize (20) is larger than Traces:BufferCapacity (10)", ex.Message, StringComparison.Ordinal);
        Assert.Contains("FlushInterval", ex.Message, StringComparison.Ordinal);
        Assert.Contains("MaxExpertsPerRecord", ex.Message, StringComparison.Ordinal);
        Assert.Empty(database.Options("edge-ok").Validate());
    }

    private static long Micros(DateTimeOffset value) => value.UtcTicks / 10;

    private static long Micros(DateTime value) => value.ToUniversalTime().Ticks / 10;
}
