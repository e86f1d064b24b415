using System.Globalization;
using DanceMoE.Coordinator;
using DanceMoE.Data;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace DanceMoE.Operations;

/// <summary>
/// The cluster as PostgreSQL records it: edges (live or stale by their last heartbeat), the active placement, how local
/// routing was over the last window, the migrations and the placement job's latest decisions; and from RabbitMQ, whether
/// a coordinator consumes its queue.
/// </summary>
public static class ClusterStatus
{
    private const string LocalRatioQuery = """
        SELECT count(*),
               avg(CASE WHEN remote THEN 0 ELSE 1 END)::double precision,
               (sum((SELECT count(*) FROM unnest(served_by) AS s(edge) WHERE s.edge = origin_edge))::double precision
                   / nullif(sum(cardinality(experts)), 0))
        FROM routing_events
        WHERE recorded_at >= @from
        """;

    /// <summary>
    /// Reads the state; a missing table fails, an unreachable PostgreSQL or RabbitMQ is <see cref="OperationFailure.Unavailable"/>.
    /// </summary>
    public static async Task<ClusterStatusReport> ReadAsync(
        string postgresUrl, string rabbitMqUri, TimeSpan window, int decisionCount, int migrationCount, MembershipOptions membership, TimeProvider time,
        CancellationToken cancellationToken)
    {
        var report = await ReadDatabaseAsync(postgresUrl, window, decisionCount, migrationCount, membership, time.GetUtcNow(), cancellationToken).ConfigureAwait(false);
        // A consumer on the coordinator's queue is the coordinator itself: the broker drops it the moment the process goes.
        var queue = RunPlacementNowConsumerDefinition.Queue;
        var consumers = await BusClient.ConsumersOfAsync(rabbitMqUri, queue, cancellationToken).ConfigureAwait(false);
        return report with { Coordinator = new CoordinatorPresence(queue, consumers) };
    }

    private static async Task<ClusterStatusReport> ReadDatabaseAsync(
        string postgresUrl, TimeSpan window, int decisionCount, int migrationCount, MembershipOptions membership, DateTimeOffset now, CancellationToken cancellationToken)
    {
        try
        {
            await using var db = DanceMoEDbContext.Create(postgresUrl);
            var edges = await db.EdgeServers.AsNoTracking().OrderBy(e => e.Id).ToListAsync(cancellationToken).ConfigureAwait(false);
            var active = await db.Placements.AsNoTracking().SingleOrDefaultAsync(p => p.IsActive, cancellationToken).ConfigureAwait(false);
            var activeReplicas = active is null ? 0 : await db.PlacementAssignments.CountAsync(a => a.PlacementVersion == active.Version, cancellationToken).ConfigureAwait(false);
            var decisions = await db.PlacementDecisions.AsNoTracking().OrderByDescending(d => d.Id).Take(decisionCount).ToListAsync(cancellationToken).ConfigureAwait(false);
            var pendingSaga = await db.PlacementDecisions.CountAsync(d => d.Status == DecisionStatus.PendingSaga, cancellationToken).ConfigureAwait(false);
            var migrations = await db.Migrations.AsNoTracking().OrderByDescending(m => m.StartedAt).Take(migrationCount).ToListAsync(cancellationToken).ConfigureAwait(false);
            var migrationsByState = await db.Migrations.GroupBy(m => m.CurrentState).Select(g => new { g.Key, Count = g.Count() })
                .ToDictionaryAsync(g => g.Key, g => g.Count, StringComparer.Ordinal, cancellationToken).ConfigureAwait(false);
            var local = await LocalRatioAsync(postgresUrl, now - window, cancellationToken).ConfigureAwait(false);
            return new ClusterStatusReport(now, window, membership, edges, active, activeReplicas, local, pendingSaga, migrationsByState, migrations, decisions);
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.UndefinedTable)
        {
            throw new OperationException(
                $"the database at {LocalEnvironment.Redact(postgresUrl)} lacks a table ({ex.MessageText}): apply the migrations with ./dancemoe db migrate", OperationFailure.Failed, ex);
        }
        catch (NpgsqlException ex)
        {
            throw Unreachable(postgresUrl, ex);
        }
        catch (InvalidOperationException ex) when (ex.InnerException is NpgsqlException inner)
        {
            // EF Core's retry strategy wraps the connection failure once its retries are spent.
            throw Unreachable(postgresUrl, inner);
        }
    }

    private static OperationException Unreachable(string postgresUrl, NpgsqlException ex) =>
        OperationException.ServiceFailure($"cannot read the cluster state at {LocalEnvironment.Redact(postgresUrl)}", ex);

    private static async Task<LocalRatio> LocalRatioAsync(string postgresUrl, DateTimeOffset from, CancellationToken cancellationToken)
    {
        await using var connection = new NpgsqlConnection(DatabaseOptions.ToNpgsql(postgresUrl));
        await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(LocalRatioQuery, connection);
        command.Parameters.AddWithValue("from", from.ToUniversalTime());
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        return new LocalRatio(reader.GetInt64(0), reader.IsDBNull(1) ? null : reader.GetDouble(1), reader.IsDBNull(2) ? null : reader.GetDouble(2));
    }
}

/// <summary>Whether a coordinator runs: the consumers of its queue on the broker; null consumers when the queue does not exist.</summary>
public sealed record CoordinatorPresence(string Queue, uint? Consumers)
{
    public bool Running => Consumers > 0;

    public Dictionary<string, object?> ToJson() => new()
    {
        ["running"] = Running,
        ["queue"] = Queue,
        ["queue_exists"] = Consumers is not null,
        ["consumers"] = Consumers ?? 0,
    };

    public string ToText() => Consumers switch
    {
        null => $"coordinator: not running (no queue '{Queue}' on the broker: none has run here; ./dancemoe coordinator starts one)",
        0 => $"coordinator: not running (queue '{Queue}' has no consumer; ./dancemoe coordinator starts one)",
        1 => $"coordinator: running (1 consumer on queue '{Queue}')",
        _ => string.Create(CultureInfo.InvariantCulture, $"coordinator: running ({Consumers} consumers on queue '{Queue}': more than one coordinator)"),
    };
}

/// <summary>How local routing was over a window: token-layers routed, and the local share of layers and of expert calls.</summary>
public sealed record LocalRatio(long TokenLayers, double? LayerLocal, double? ExpertLocal);

/// <summary>What <see cref="ClusterStatus.ReadAsync"/> found, as the JSON document and the text lines <c>dancemoe status</c> prints.</summary>
public sealed record ClusterStatusReport(
    DateTimeOffset At,
    TimeSpan Window,
    MembershipOptions Membership,
    IReadOnlyList<EdgeServer> Edges,
    PlacementVersion? Active,
    int ActiveReplicas,
    LocalRatio Local,
    int PendingSagaDecisions,
    IReadOnlyDictionary<string, int> MigrationsByState,
    IReadOnlyList<MigrationState> LatestMigrations,
    IReadOnlyList<PlacementDecision> LatestDecisions)
{
    /// <summary>Whether a coordinator consumes its queue; null when the broker was not asked.</summary>
    public CoordinatorPresence? Coordinator { get; init; }

    /// <summary>How long ago an edge was last heard from (never negative, whatever the clocks say).</summary>
    public TimeSpan SinceSeen(EdgeServer edge)
    {
        ArgumentNullException.ThrowIfNull(edge);
        return edge.LastSeenAt > At ? TimeSpan.Zero : At - edge.LastSeenAt;
    }

    /// <summary>
    /// <c>live</c> while its heartbeats arrive, <c>stale</c> once <see cref="MembershipOptions.MissedHeartbeats"/> are
    /// missing (of the edge's own interval when it beats less often), as the coordinator judges it.
    /// </summary>
    public string State(EdgeServer edge)
    {
        ArgumentNullException.ThrowIfNull(edge);
        return Membership.IsAlive(edge.LastSeenAt, At, edge.HeartbeatSeconds) ? "live" : "stale";
    }

    /// <summary>Whether the edge said it beats less often than <see cref="Membership"/> assumes, and so is judged by its own interval.</summary>
    private bool BeatsSlower(EdgeServer edge) => edge.HeartbeatSeconds > Membership.HeartbeatSeconds;

    /// <summary>Migrations in one of <see cref="MigrationStateName.Running"/>.</summary>
    public int RunningMigrations => MigrationStateName.Running.Sum(state => MigrationsByState.GetValueOrDefault(state));

    public int CompletedMigrations => MigrationsByState.GetValueOrDefault(MigrationStateName.Completed);

    public int FailedMigrations => MigrationsByState.GetValueOrDefault(MigrationStateName.Failed);

    /// <summary>The document of <c>dancemoe status --json</c>, in <see cref="StatusFormat.Json"/>'s snake case.</summary>
    public Dictionary<string, object?> ToJson() => new()
    {
        ["at"] = At,
        ["coordinator"] = Coordinator?.ToJson(),
        ["stale_after_seconds"] = Membership.DownAfter.TotalSeconds,
        ["edges"] = Edges.Select(e => new Dictionary<string, object?>
        {
            ["id"] = e.Id,
            ["alive"] = Membership.IsAlive(e.LastSeenAt, At, e.HeartbeatSeconds),
            ["state"] = State(e),
            ["last_seen_at"] = e.LastSeenAt,
            ["seconds_since_seen"] = Math.Round(SinceSeen(e).TotalSeconds, 1),
            ["heartbeat_seconds"] = e.HeartbeatSeconds,
            ["stale_after_seconds"] = Membership.DownAfterFor(e.HeartbeatSeconds).TotalSeconds,
            ["memory_budget_bytes"] = e.MemoryBudgetBytes,
            ["memory_used_bytes"] = e.MemoryUsedBytes,
            ["execution_provider"] = e.ExecutionProvider,
            ["compute_class"] = e.ComputeClass,
        }).ToList(),
        ["active_placement"] = Active is null ? null : new Dictionary<string, object?>
        {
            ["version"] = Active.Version,
            ["algorithm"] = Active.Algorithm,
            ["predicted_cost"] = Active.PredictedCost,
            ["activated_at"] = Active.ActivatedAt,
            ["replicas"] = ActiveReplicas,
        },
        ["local_ratio"] = new Dictionary<string, object?>
        {
            ["window_minutes"] = Window.TotalMinutes,
            ["token_layers"] = Local.TokenLayers,
            ["layer_local_ratio"] = Local.LayerLocal,
            ["expert_local_ratio"] = Local.ExpertLocal,
        },
        ["pending_saga_decisions"] = PendingSagaDecisions,
        ["migrations"] = new Dictionary<string, object?>
        {
            ["running"] = RunningMigrations,
            ["completed"] = CompletedMigrations,
            ["failed"] = FailedMigrations,
            ["latest"] = LatestMigrations.Select(StatusFormat.MigrationJson).ToList(),
        },
        ["decisions"] = LatestDecisions.Select(StatusFormat.DecisionJson).ToList(),
    };

    /// <summary>A duration as a person reads it: seconds, minutes, hours or days, whole.</summary>
    public static string Ago(TimeSpan age) => age.TotalSeconds switch
    {
        < 120 => string.Create(CultureInfo.InvariantCulture, $"{age.TotalSeconds:F0} s"),
        < 120 * 60 => string.Create(CultureInfo.InvariantCulture, $"{age.TotalMinutes:F0} min"),
        < 48 * 3600 => string.Create(CultureInfo.InvariantCulture, $"{age.TotalHours:F0} h"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{age.TotalDays:F0} d"),
    };

    /// <summary>The lines of <c>dancemoe status</c>.</summary>
    public IEnumerable<string> ToText()
    {
        var inv = CultureInfo.InvariantCulture;
        if (Coordinator is not null)
        {
            yield return Coordinator.ToText();
        }

        var ownIntervals = Edges.Any(BeatsSlower) ? ", or of the edge's own interval when longer" : "";
        yield return string.Create(
            inv, $"edges ({Edges.Count(e => State(e) == "live")} of {Edges.Count} live; stale after {Membership.MissedHeartbeats} missed heartbeats of {Membership.HeartbeatSeconds} s{ownIntervals}):");
        foreach (var e in Edges)
        {
            yield return string.Create(
                inv,
                $"  {e.Id,-16} {State(e),-6} budget {e.MemoryBudgetBytes / 1048576.0,9:F1} MiB  used {e.MemoryUsedBytes / 1048576.0,9:F1} MiB  {e.ExecutionProvider,-5} {(e.ComputeClass is { Length: > 0 } computeClass ? $"({computeClass}) " : "")}last heard {Ago(SinceSeen(e))} ago{(BeatsSlower(e) ? $", beats every {e.HeartbeatSeconds} s" : "")}");
        }

        yield return Active is null
            ? "active placement: none"
            : string.Create(inv, $"active placement: v{Active.Version} ({Active.Algorithm}, predicted cost {Active.PredictedCost:F3}, {ActiveReplicas} replicas, activated {Active.ActivatedAt:u})");
        yield return Local.TokenLayers == 0
            ? string.Create(inv, $"local ratio (last {Window.TotalMinutes:F0} min): no routing events")
            : string.Create(inv, $"local ratio (last {Window.TotalMinutes:F0} min): layers {Local.LayerLocal:F3}, expert calls {Local.ExpertLocal:F3} over {Local.TokenLayers} token-layers");
        yield return string.Create(inv, $"migrations: {RunningMigrations} running, {CompletedMigrations} completed, {FailedMigrations} failed");
        foreach (var m in LatestMigrations)
        {
            yield return "  " + StatusFormat.MigrationLine(m);
        }

        yield return $"placement decisions (latest {LatestDecisions.Count}; {PendingSagaDecisions} waiting for the migration saga):";
        foreach (var d in LatestDecisions)
        {
            yield return "  " + StatusFormat.DecisionLine(d);
        }
    }
}
