using DanceMoE.Traces;

namespace DanceMoE.IntegrationTests.Traces;

/// <summary>The trace writer's journal: what an edge killed right after answering leaves on disk, and what its next run writes.</summary>
public sealed class TraceJournalTests(TraceDatabase database) : IClassFixture<TraceDatabase>
{
    private const string ClosedPort = "Host=127.0.0.1;Port=1;Database=none;Username=none;Password=none";

    [Fact]
    public async Task Rows_persisted_by_a_writer_that_is_then_killed_are_written_by_the_next_writer_of_the_edge_exactly_once()
    {
        const string edge = "edge-killed-after-answering";
        var added = TraceRecords.Request(edge, Guid.NewGuid(), positions: 40, layers: 6).ToList();
        var alreadyStored = added.Take(60).ToList();
        await using (var earlier = new TraceWriter(database.Options(edge)))
        {
            earlier.Start();
            alreadyStored.ForEach(earlier.Add);
            await earlier.FlushAsync(CancellationToken.None);
        }

        // PostgreSQL away: every row waits in memory, and in the journal. What a kill -9 leaves is what the operating
        // system holds for the journal's files, which a copy made before the writer stops reads.
        var killedSpill = database.NewSpillDirectory();
        var next = database.NewSpillDirectory();
        var down = database.Options(edge, killedSpill, ClosedPort);
        down.ShutdownTimeout = TimeSpan.FromMilliseconds(200);
        await using (var killed = new TraceWriter(down))
        {
            added.ForEach(killed.Add);
            killed.Persist();
            Assert.Equal(added.Count, killed.State.Pending);
            Assert.Empty(Directory.GetFiles(killedSpill, "*.spill"));
            CopyFiles(Path.Combine(killedSpill, "journal"), Path.Combine(next, "journal"));
        }

        await using (var writer = new TraceWriter(database.Options(edge, next)))
        {
            Assert.Equal(added.Count, writer.State.Spilled);
            writer.Start();
            await writer.FlushAsync(CancellationToken.None);
            Assert.Equal(added.Count - alreadyStored.Count, writer.State.RowsWritten);
            Assert.Equal(alreadyStored.Count, writer.State.RowsDuplicate);
        }

        Assert.Empty(Directory.GetFiles(next, "*.spill", SearchOption.AllDirectories));
        Assert.Equal(added.Count, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE origin_edge = @e", ("e", edge)));
        Assert.Equal(added.Count, await database.ScalarAsync("SELECT count(DISTINCT (request_id, position, layer)) FROM routing_events WHERE origin_edge = @e", ("e", edge)));
        Assert.Empty(await database.RollUpDifferencesAsync(edge));
    }

    [Fact]
    public async Task A_writer_stopped_cleanly_leaves_no_journal_and_its_unwritten_rows_in_the_spill_file()
    {
        const string edge = "edge-stopped-cleanly";
        var spill = database.NewSpillDirectory();
        var added = TraceRecords.Request(edge, Guid.NewGuid(), positions: 10, layers: 4).ToList();
        var down = database.Options(edge, spill, ClosedPort);
        down.ShutdownTimeout = TimeSpan.FromMilliseconds(200);
        await using (var writer = new TraceWriter(down))
        {
            writer.Start();
            added.ForEach(writer.Add);
            writer.Persist();
            Assert.NotEmpty(Directory.GetFiles(Path.Combine(spill, "journal"), "*.spill"));
        }

        Assert.Empty(Directory.GetFiles(Path.Combine(spill, "journal"), "*.spill"));
        await using var next = new TraceWriter(database.Options(edge, spill));
        Assert.Equal(added.Count, next.State.Spilled);
    }

    [Fact]
    public async Task Journal_segments_whose_rows_are_all_written_are_deleted_while_the_writer_runs()
    {
        const string edge = "edge-journal-trimmed";
        var spill = database.NewSpillDirectory();
        var options = database.Options(edge, spill);
        options.BatchSize = 1000;
        await using var writer = new TraceWriter(options);
        writer.Start();
        for (var request = 0; request < 30; request++)
        {
            TraceRecords.Request(edge, Guid.NewGuid(), positions: 100, layers: 10).ToList().ForEach(writer.Add);
            writer.Persist();
            await writer.FlushAsync(CancellationToken.None);
        }

        Assert.Equal(30_000, writer.State.RowsWritten);
        Assert.True(Directory.GetFiles(Path.Combine(spill, "journal"), "*.spill").Length <= 1, "sealed journal segments of written rows are left");
    }

    private static void CopyFiles(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from, "*.spill"))
        {
            File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
        }
    }
}
