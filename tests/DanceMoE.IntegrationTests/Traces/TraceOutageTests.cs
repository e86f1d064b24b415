using DanceMoE.Traces;
using Npgsql;

namespace DanceMoE.IntegrationTests.Traces;

public sealed class TraceOutageTests(TraceDatabase database) : IClassFixture<TraceDatabase>
{
    [Fact]
    public async Task Rows_added_while_PostgreSQL_is_away_arrive_exactly_once_after_it_returns()
    {
        const string edge = "edge-outage";
        var server = new NpgsqlConnectionStringBuilder(database.ConnectionString);
        await using var proxy = new TcpProxy(server.Host!, server.Port);
        var viaProxy = new NpgsqlConnectionStringBuilder(database.ConnectionString) { Host = "127.0.0.1", Port = proxy.Port }.ConnectionString;
        var options = database.Options(edge, connectionString: viaProxy);
        options.BufferCapacity = 500;
        options.BatchSize = 100;

        var request = Guid.NewGuid();
        var records = TraceRecords.Request(edge, request, positions: 300, layers: 10, remoteEdge: "edge-peer").ToList();
        await using var writer = new TraceWriter(options);
        writer.Start();

        // Up: the first third goes straight through.
        foreach (var record in records[..1000])
        {
            writer.Add(record);
        }

        await writer.FlushAsync(CancellationToken.None);
        Assert.Equal(1000, writer.State.RowsWritten);

        // Down: Add keeps returning; memory fills, then rows spill.
        proxy.Cut();
        foreach (var record in records[1000..2000])
        {
            writer.Add(record);
        }

        await WaitUntilAsync(() => !writer.State.DatabaseReachable, "the writer to notice PostgreSQL is away");
        Assert.True(writer.State.Spilled > 0, "rows past the memory buffer spill to disk");
        Assert.True(writer.State.Lag > TimeSpan.Zero);
        Assert.NotNull(writer.State.LastError);
        Assert.True(writer.State.Pending <= options.BufferCapacity + options.BatchSize);

        // Back: the rest is added while the backlog replays.
        proxy.Restore();
        foreach (var record in records[2000..])
        {
            writer.Add(record);
        }

        await writer.FlushAsync(CancellationToken.None);
        var state = writer.State;
        Assert.Equal(records.Count, state.RowsAdded);
        Assert.Equal(records.Count, state.RowsWritten + state.RowsDuplicate);
        Assert.True(state.DatabaseReachable);
        Assert.True(state.FlushFailures > 0);

        Assert.Equal(records.Count, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE request_id = @id", ("id", request)));
        Assert.Equal(records.Count, await database.ScalarAsync("SELECT count(DISTINCT (position, layer)) FROM routing_events WHERE request_id = @id", ("id", request)));
        Assert.Equal(records.Count * 2, await database.ScalarAsync("SELECT sum(count) FROM activation_counts WHERE origin_edge = @e", ("e", edge)));
        Assert.Empty(await database.RollUpDifferencesAsync(edge));
    }

    [Fact]
    public async Task A_blocked_PostgreSQL_times_batches_out_and_Add_spills_instead_of_waiting()
    {
        const string edge = "edge-blocked";
        var options = database.Options(edge);
        options.BufferCapacity = 200;
        options.BatchSize = 100;
        options.CommandTimeout = TimeSpan.FromSeconds(1);
        var request = Guid.NewGuid();
        var records = TraceRecords.Request(edge, request, positions: 100, layers: 10).ToList();

        await using var locker = new NpgsqlConnection(database.ConnectionString);
        await locker.OpenAsync();
        await using var transaction = await locker.BeginTransactionAsync();
        await using (var lockTable = new NpgsqlCommand("LOCK TABLE routing_events IN ACCESS EXCLUSIVE MODE", locker, transaction))
        {
            await lockTable.ExecuteNonQueryAsync();
        }

        await using var writer = new TraceWriter(options);
        writer.Start();
        records.ForEach(writer.Add);
        await WaitUntilAsync(() => writer.State.FlushFailures > 0, "a batch to time out");
        Assert.True(writer.State.Spilled > 0);
        Assert.Equal(0, writer.State.RowsWritten);

        await transaction.RollbackAsync();
        await writer.FlushAsync(CancellationToken.None);
        Assert.Equal(records.Count, writer.State.RowsWritten + writer.State.RowsDuplicate);
        Assert.Equal(records.Count, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE request_id = @id", ("id", request)));
        Assert.Empty(await database.RollUpDifferencesAsync(edge));
    }

    [Fact]
    public async Task A_connection_cut_again_and_again_loses_and_doubles_nothing()
    {
        const string edge = "edge-flaky";
        var server = new NpgsqlConnectionStringBuilder(database.ConnectionString);
        await using var proxy = new TcpProxy(server.Host!, server.Port);
        var viaProxy = new NpgsqlConnectionStringBuilder(database.ConnectionString) { Host = "127.0.0.1", Port = proxy.Port }.ConnectionString;
        var options = database.Options(edge, connectionString: viaProxy);
        options.BufferCapacity = 200;
        options.BatchSize = 50;
        var request = Guid.NewGuid();
        var records = TraceRecords.Request(edge, request, positions: 200, layers: 10).ToList();
        await using var writer = new TraceWriter(options);
        writer.Start();
        for (var i = 0; i < records.Count; i++)
        {
            writer.Add(records[i]);
            if (i % 250 == 125)
            {
                proxy.Cut();
            }
            else if (i % 250 == 200)
            {
                proxy.Restore();
            }
        }

        proxy.Restore();
        await writer.FlushAsync(CancellationToken.None);
        Assert.Equal(records.Count, writer.State.RowsWritten + writer.State.RowsDuplicate);
        Assert.Equal(records.Count, await database.ScalarAsync("SELECT count(*) FROM routing_events WHERE request_id = @id", ("id", request)));
        Assert.Empty(await database.RollUpDifferencesAsync(edge));
    }

    [Fact]
    public async Task Rows_added_while_PostgreSQL_is_stopped_and_started_again_arrive_exactly_once()
    {
        const string edge = "edge-restarted-server";
        await using var server = await PrivatePostgres.StartAsync();
        var connectionString = await server.CreateMigratedDatabaseAsync("traces");
        var options = database.Options(edge, connectionString: connectionString);
        options.BufferCapacity = 300;
        options.BatchSize = 100;
        var request = Guid.NewGuid();
        var records = TraceRecords.Request(edge, request, positions: 200, layers: 10, remoteEdge: "edge-peer").ToList();
        await using var writer = new TraceWriter(options);
        writer.Start();
        records[..500].ForEach(writer.Add);
        await writer.FlushAsync(CancellationToken.None);

        await server.StopImmediatelyAsync();
        records[500..1500].ForEach(writer.Add);
        await WaitUntilAsync(() => !writer.State.DatabaseReachable, "the writer to notice PostgreSQL stopped");
        Assert.True(writer.State.Spilled > 0);

        await server.StartAgainAsync();
        records[1500..].ForEach(writer.Add);
        await writer.FlushAsync(CancellationToken.None);

        Assert.Equal(records.Count, writer.State.RowsWritten + writer.State.RowsDuplicate);
        await using var check = new NpgsqlConnection(connectionString);
        await check.OpenAsync();
        await using var count = new NpgsqlCommand(
            "SELECT count(*), count(DISTINCT (position, layer)), (SELECT sum(count) FROM activation_counts WHERE origin_edge = @e) FROM routing_events WHERE request_id = @id", check);
        count.Parameters.AddWithValue("id", request);
        count.Parameters.AddWithValue("e", edge);
        await using var reader = await count.ExecuteReaderAsync();
        await reader.ReadAsync();
        Assert.Equal((long)records.Count, reader.GetInt64(0));
        Assert.Equal((long)records.Count, reader.GetInt64(1));
        Assert.Equal(records.Count * 2L, reader.GetInt64(2));
    }

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (!condition())
        {
            try
            {
                await Task.Delay(10, timeout.Token);
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException($"gave up waiting for {what}");
            }
        }
    }
}
