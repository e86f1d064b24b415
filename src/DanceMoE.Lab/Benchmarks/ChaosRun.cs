using System.Globalization;
using DanceMoE.Data;
using DanceMoE.Hosting;
using DanceMoE.Operations;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>One fault of <c>bench chaos</c> under load: the load before it, the fault, the wait until every edge answers again, the rows that landed.</summary>
internal sealed class ChaosRun(
    ChaosBenchmarkSettings settings, ShiftEnvironment environment, BusClient client, IReadOnlyList<string> prompts, ChaosTimeouts timeouts, int layers, Action<string> log)
{
    private static readonly string[] Edges = ["edge-1", "edge-2", "edge-3"];

    /// <summary>
    /// Runs <paramref name="inject"/> (it returns what it did) under load. <paramref name="beforeFault"/> runs under load first;
    /// <paramref name="migration"/> after the recovery (it returns how the migration ended); <paramref name="after"/> once the load stopped.
    /// </summary>
    public async Task<ChaosResult> RunAsync(
        string fault, Func<CancellationToken, Task<string>> inject, CancellationToken cancellationToken, Func<CancellationToken, Task>? after = null,
        Func<CancellationToken, Task>? beforeFault = null, Func<CancellationToken, Task<string>>? migration = null)
    {
        var load = new ChaosLoad(client.Requests, Edges, prompts, settings.MaxTokens, timeouts, log);
        load.Start(settings.Interval, settings.PerEdge);
        string action;
        DateTimeOffset faultAt, faultEnd;
        DateTimeOffset? recoveredAt = null;
        int inFlight;
        var migrationEnd = "none";
        IReadOnlyList<string> unconsumed = [];
        try
        {
            await Task.Delay(settings.Before, cancellationToken).ConfigureAwait(false);
            if (beforeFault is not null)
            {
                await beforeFault(cancellationToken).ConfigureAwait(false);
            }

            inFlight = load.InFlight();
            log($"{fault}: injecting the fault with {inFlight} requests in flight...");
            faultAt = DateTimeOffset.UtcNow;
            action = await inject(cancellationToken).ConfigureAwait(false);
            faultEnd = DateTimeOffset.UtcNow;
            log($"{fault}: {action}; waiting until every edge answers a request sent since...");
            var deadline = faultEnd + settings.RecoveryTimeout;
            while (DateTimeOffset.UtcNow < deadline && (recoveredAt = load.AllEdgesAnsweredSince(faultEnd)) is null)
            {
                await Task.Delay(200, cancellationToken).ConfigureAwait(false);
            }

            // Answers need only the request queues: every other queue of the cluster must have its consumer back too.
            unconsumed = await UnconsumedQueuesAsync(deadline, cancellationToken).ConfigureAwait(false);

            if (migration is not null)
            {
                migrationEnd = await migration(cancellationToken).ConfigureAwait(false);
            }

            await Task.Delay(settings.After, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await load.StopAsync().ConfigureAwait(false);
        }

        if (after is not null)
        {
            await after(cancellationToken).ConfigureAwait(false);
        }

        var requests = load.Requests();
        var completed = requests.Where(r => r.Answer is not null).ToList();
        var expected = completed.Sum(r => (long)(r.Answer!.Stats.PromptTokens + r.Answer.TokenIds.Count - 1) * layers);
        var (landed, duplicates) = await RowsAsync([.. completed.Select(r => r.Id)], expected, cancellationToken).ConfigureAwait(false);
        return new ChaosResult
        {
            Fault = fault,
            Action = action,
            Requests = requests.Count,
            Completed = completed.Count,
            Failed = requests.Count(r => r.Answer is null && !r.Hung),
            InFlightAtFault = inFlight,
            Hung = requests.Count(r => r.Hung),
            RecoveryS = recoveredAt is { } at ? Math.Round((at - faultEnd).TotalSeconds, 1) : null,
            Recovered = recoveredAt is not null && unconsumed.Count == 0,
            FaultS = Math.Round((faultEnd - faultAt).TotalSeconds, 1),
            RowsExpected = expected,
            RowsLanded = landed,
            DuplicateRows = duplicates,
            Migration = migrationEnd,
            Errors = [.. requests.Where(r => r.Error is not null).GroupBy(r => r.Error!).Select(g => $"{g.Count()} x {g.Key}"),
                .. unconsumed.Select(q => $"queue {q} had no consumer again {settings.RecoveryTimeout.TotalSeconds:F0} s after the fault")],
        };
    }

    /// <summary>The coordinator killed while a migration it started moves experts, restarted a second later; the migration must still end.</summary>
    public async Task<ChaosResult> CoordinatorKillAsync(IReadOnlyList<string> coordinatorArguments, CancellationToken cancellationToken)
    {
        await SeedHistoryAsync(cancellationToken).ConfigureAwait(false);
        long? decisionId = null;
        var decisionText = "";
        return await RunAsync(ChaosBenchmark.CoordinatorKill, async ct =>
        {
            environment.Kill("coordinator");
            await Task.Delay(TimeSpan.FromSeconds(1), ct).ConfigureAwait(false);
            environment.Start("coordinator", coordinatorArguments);
            return $"kill -9 the coordinator {decisionText}, restarted 1 s later";
        }, cancellationToken, beforeFault: async ct =>
        {
            var commandId = await PlacementJobTrigger.SendAsync(client.Requests, "bench chaos", ct).ConfigureAwait(false);
            var decision = await PlacementJobTrigger.WaitForDecisionAsync(environment.PostgresUrl, commandId, TimeSpan.FromMinutes(2), null, ct).ConfigureAwait(false);
            log($"decision {decision.Id}: {decision.Decision} ({decision.Status}): {decision.Reason}");
            if (decision.Decision != DecisionKind.Migrate || decision.Status != DecisionStatus.PendingSaga)
            {
                decisionText = $"(no migration: decision {decision.Decision}, {decision.Status})";
                return;
            }

            decisionId = decision.Id;
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(120);
            while (await MigrationAsync(decision.Id, ct).ConfigureAwait(false) is not { LoadsDone: >= 1 } && DateTime.UtcNow < deadline)
            {
                await Task.Delay(100, ct).ConfigureAwait(false);
            }

            var row = await MigrationAsync(decision.Id, ct).ConfigureAwait(false);
            decisionText = $"mid-migration (state {row?.CurrentState}, {row?.LoadsDone} loads done)";
        }, migration: async ct =>
        {
            if (decisionId is not { } id)
            {
                return "none " + decisionText;
            }

            var wait = await MigrationWaiter.WaitAsync(environment.PostgresUrl, id, TimeSpan.FromSeconds(240), null, null, ct).ConfigureAwait(false);
            return wait.Last is { } m
                ? string.Create(CultureInfo.InvariantCulture, $"{m.CurrentState}: {m.LoadsDone} loads, {m.UnloadsDone} unloads in {((m.FinishedAt ?? DateTimeOffset.UtcNow) - m.StartedAt).TotalSeconds:F1} s{(m.Reason is { } r ? " (" + r + ")" : "")}")
                : $"{wait.End}";
        }).ConfigureAwait(false);
    }

    /// <summary>The cluster's queues that have no consumer, polled until none is missing or <paramref name="deadline"/>.</summary>
    private async Task<IReadOnlyList<string>> UnconsumedQueuesAsync(DateTimeOffset deadline, CancellationToken cancellationToken)
    {
        string[] queues =
        [
            .. Edges.SelectMany(e => new[] { EdgeQueues.Requests(e), EdgeQueues.Experts(e), EdgeQueues.Control(e) }),
            "coordinator", "coordinator-migrations", "coordinator-activations", "coordinator-heartbeats", "coordinator-lagging-edges", "coordinator-placement-applied",
        ];
        while (true)
        {
            var missing = new List<string>();
            foreach (var queue in queues)
            {
                try
                {
                    if (await BusClient.ConsumersOfAsync(environment.RabbitMqUri, queue, cancellationToken).ConfigureAwait(false) is null or 0)
                    {
                        missing.Add(queue);
                    }
                }
                catch (RabbitMQ.Client.Exceptions.OperationInterruptedException ex) when (ex.ShutdownReason?.ReplyCode == 405)
                {
                    // RESOURCE_LOCKED: an exclusive queue (an edge's expert queue), which lives only while its consumer's connection does.
                }
                catch (Exception ex) when (ex is OperationException or RabbitMQ.Client.Exceptions.RabbitMQClientException or IOException)
                {
                    missing.Add(queue);
                }
            }

            if (missing.Count == 0 || DateTimeOffset.UtcNow > deadline)
            {
                return missing;
            }

            await Task.Delay(1000, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task<MigrationState?> MigrationAsync(long decisionId, CancellationToken cancellationToken)
    {
        await using var db = DanceMoEDbContext.Create(environment.PostgresUrl);
        return await db.Migrations.AsNoTracking().Where(m => m.DecisionId == decisionId).OrderBy(m => m.StartedAt).FirstOrDefaultAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// A recorded past in which edge-1's requests used the experts it does not hold: the placement job then wants them on
    /// edge-1, a migration that loads experts (slowly, at the edges' <c>--load-ms-per-mb</c>) while the load goes on.
    /// </summary>
    private async Task SeedHistoryAsync(CancellationToken cancellationToken)
    {
        var placement = Edge.PlacementFile.Load(Path.Combine(environment.Directory, "placement.json"));
        var bucket = DateTimeOffset.UtcNow.AddMinutes(-2);
        bucket = new DateTimeOffset(bucket.Year, bucket.Month, bucket.Day, bucket.Hour, bucket.Minute, 0, TimeSpan.Zero);
        // Added to the counts the edges' own traffic rolled up into that minute (already there once the run is past it).
        await using var connection = new NpgsqlConnection(DatabaseOptions.ToNpgsql(environment.PostgresUrl));
        await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        foreach (var x in placement.Assignments)
        {
            foreach (var edge in Edges)
            {
                var wanted = edge == Edges[0] ? !x.Servers.Contains(Edges[0]) : x.Servers.Contains(edge);
                await using var upsert = new NpgsqlCommand(
                    "INSERT INTO activation_counts (bucket, origin_edge, layer, expert, count) VALUES (@bucket, @edge, @layer, @expert, @count) " +
                    "ON CONFLICT (bucket, origin_edge, layer, expert) DO UPDATE SET count = activation_counts.count + EXCLUDED.count", connection);
                upsert.Parameters.AddWithValue("bucket", bucket);
                upsert.Parameters.AddWithValue("edge", edge);
                upsert.Parameters.AddWithValue("layer", (short)x.Layer);
                upsert.Parameters.AddWithValue("expert", (short)x.Expert);
                upsert.Parameters.AddWithValue("count", wanted ? 100_000L : 10L);
                await upsert.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Rows of these requests in routing_events, and how many repeat a (request, position, layer): waits until all expected landed, or gives up.</summary>
    private async Task<(long Landed, long Duplicates)> RowsAsync(Guid[] ids, long expected, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + settings.RowsTimeout;
        (long Landed, long Duplicates) rows = (0, 0);
        while (true)
        {
            try
            {
                await using var connection = new NpgsqlConnection(DatabaseOptions.ToNpgsql(environment.PostgresUrl));
                await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
                await using var query = new NpgsqlCommand(
                    "SELECT count(*), count(*) - count(DISTINCT (request_id, position, layer)) FROM routing_events WHERE request_id = ANY(@ids)", connection);
                query.Parameters.AddWithValue("ids", ids);
                await using var reader = await query.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
                rows = (reader.GetInt64(0), reader.GetInt64(1));
            }
            catch (NpgsqlException ex)
            {
                log($"reading routing_events: {ex.Message}; again");
            }

            if (rows.Landed >= expected || DateTime.UtcNow > deadline)
            {
                return rows;
            }

            await Task.Delay(500, cancellationToken).ConfigureAwait(false);
        }
    }
}
