using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using DanceMoE.Cli.Verbs;
using DanceMoE.Coordinator;
using DanceMoE.Coordinator.Saga;
using DanceMoE.Data;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace DanceMoE.Cli.Commands;

/// <summary>
/// <c>dancemoe status</c>: the cluster as PostgreSQL records it: edges (alive by their last heartbeat), the active
/// placement, how local routing was over the last window, the migrations (running, completed, failed with their
/// reasons) and the placement job's latest decisions.
/// </summary>
public static class StatusCommand
{
    internal static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    private const string LocalRatioQuery = """
        SELECT count(*),
               avg(CASE WHEN remote THEN 0 ELSE 1 END)::double precision,
               (sum((SELECT count(*) FROM unnest(served_by) AS s(edge) WHERE s.edge = origin_edge))::double precision
                   / nullif(sum(cardinality(experts)), 0))
        FROM routing_events
        WHERE recorded_at >= @from
        """;

    public static Command Create()
    {
        var json = CliOptions.Flag("json", "print the state as JSON");
        var window = CliOptions.Double("window-minutes", 10, "routing events the local ratio is computed over", 0.01, 7 * 24 * 60);
        var decisions = CliOptions.Int("decisions", 5, "latest placement decisions to show", 0, 1000);
        var migrations = CliOptions.Int("migrations", 5, "latest migrations to show", 0, 1000);
        var heartbeat = CliOptions.Double("heartbeat-seconds", 2, "the edges' heartbeat interval", 0.1, 3600);
        var missed = CliOptions.Int("missed-heartbeats", 3, "missed heartbeats before an edge counts as down", 1, 1000);
        var command = new Command("status", "the cluster as PostgreSQL records it: edges, placement, local ratio, migrations, decisions")
        {
            json, window, decisions, migrations, heartbeat, missed,
        };
        command.SetAction((result, cancellationToken) => RunAsync(
            result.GetValue(json),
            TimeSpan.FromMinutes(result.GetValue(window)),
            result.GetValue(decisions),
            result.GetValue(migrations),
            new MembershipOptions { HeartbeatSeconds = result.GetValue(heartbeat), MissedHeartbeats = result.GetValue(missed) },
            cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(
        bool asJson, TimeSpan window, int decisionCount, int migrationCount, MembershipOptions membership, CancellationToken cancellationToken)
    {
        var now = DateTimeOffset.UtcNow;
        List<EdgeServer> edges;
        PlacementVersion? active;
        int activeReplicas;
        List<PlacementDecision> decisions;
        int pendingSaga;
        List<MigrationState> migrations;
        Dictionary<string, int> migrationsByState;
        (long TokenLayers, double? LayerLocal, double? ExpertLocal) local;
        try
        {
            await using var db = DanceMoEDbContext.Create(CliEnvironment.PostgresUrl);
            edges = await db.EdgeServers.AsNoTracking().OrderBy(e => e.Id).ToListAsync(cancellationToken).ConfigureAwait(false);
            active = await db.Placements.AsNoTracking().SingleOrDefaultAsync(p => p.IsActive, cancellationToken).ConfigureAwait(false);
            activeReplicas = active is null ? 0 : await db.PlacementAssignments.CountAsync(a => a.PlacementVersion == active.Version, cancellationToken).ConfigureAwait(false);
            decisions = await db.PlacementDecisions.AsNoTracking().OrderByDescending(d => d.Id).Take(decisionCount).ToListAsync(cancellationToken).ConfigureAwait(false);
            pendingSaga = await db.PlacementDecisions.CountAsync(d => d.Status == DecisionStatus.PendingSaga, cancellationToken).ConfigureAwait(false);
            migrations = await db.Migrations.AsNoTracking().OrderByDescending(m => m.StartedAt).Take(migrationCount).ToListAsync(cancellationToken).ConfigureAwait(false);
            migrationsByState = await db.Migrations.GroupBy(m => m.CurrentState).Select(g => new { g.Key, Count = g.Count() })
                .ToDictionaryAsync(g => g.Key, g => g.Count, StringComparer.Ordinal, cancellationToken).ConfigureAwait(false);
            local = await LocalRatioAsync(now - window, cancellationToken).ConfigureAwait(false);
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.UndefinedTable)
        {
            throw new CliException($"the database at {DbCommand.Redact(CliEnvironment.PostgresUrl)} lacks a table ({ex.MessageText}): apply the migrations with ./dancemoe db migrate", ExitCodes.Failed, ex);
        }
        catch (NpgsqlException ex)
        {
            throw new CliException($"cannot read the cluster state at {DbCommand.Redact(CliEnvironment.PostgresUrl)}: {ex.Message} (is it up? ./dancemoe services up)", ExitCodes.Unavailable, ex);
        }

        if (asJson)
        {
            var document = new Dictionary<string, object?>
            {
                ["at"] = now,
                ["edges"] = edges.Select(e => new Dictionary<string, object?>
                {
                    ["id"] = e.Id,
                    ["alive"] = membership.IsAlive(e.LastSeenAt, now),
                    ["last_seen_at"] = e.LastSeenAt,
                    ["memory_budget_bytes"] = e.MemoryBudgetBytes,
                    ["memory_used_bytes"] = e.MemoryUsedBytes,
                    ["execution_provider"] = e.ExecutionProvider,
                    ["compute_class"] = e.ComputeClass,
                }).ToList(),
                ["active_placement"] = active is null ? null : new Dictionary<string, object?>
                {
                    ["version"] = active.Version,
                    ["algorithm"] = active.Algorithm,
                    ["predicted_cost"] = active.PredictedCost,
                    ["activated_at"] = active.ActivatedAt,
                    ["replicas"] = activeReplicas,
                },
                ["local_ratio"] = new Dictionary<string, object?>
                {
                    ["window_minutes"] = window.TotalMinutes,
                    ["token_layers"] = local.TokenLayers,
                    ["layer_local_ratio"] = local.LayerLocal,
                    ["expert_local_ratio"] = local.ExpertLocal,
                },
                ["pending_saga_decisions"] = pendingSaga,
                ["migrations"] = new Dictionary<string, object?>
                {
                    ["running"] = MigrationStateName.Running.Sum(state => migrationsByState.GetValueOrDefault(state)),
                    ["completed"] = migrationsByState.GetValueOrDefault(MigrationStateName.Completed),
                    ["failed"] = migrationsByState.GetValueOrDefault(MigrationStateName.Failed),
                    ["latest"] = migrations.Select(MigrationJson).ToList(),
                },
                ["decisions"] = decisions.Select(DecisionJson).ToList(),
            };
            Console.WriteLine(JsonSerializer.Serialize(document, Json));
            return ExitCodes.Ok;
        }

        Console.WriteLine($"edges ({edges.Count(e => membership.IsAlive(e.LastSeenAt, now))} of {edges.Count} alive; down after {membership.MissedHeartbeats} missed heartbeats of {membership.HeartbeatSeconds} s):");
        foreach (var e in edges)
        {
            Console.WriteLine(string.Create(
                CultureInfo.InvariantCulture,
                $"  {e.Id,-16} {(membership.IsAlive(e.LastSeenAt, now) ? "alive" : "down"),-6} budget {e.MemoryBudgetBytes / 1048576.0,9:F1} MiB  used {e.MemoryUsedBytes / 1048576.0,9:F1} MiB  {e.ExecutionProvider,-5} last seen {(now - e.LastSeenAt).TotalSeconds:F0} s ago"));
        }

        Console.WriteLine(active is null
            ? "active placement: none"
            : string.Create(CultureInfo.InvariantCulture, $"active placement: v{active.Version} ({active.Algorithm}, predicted cost {active.PredictedCost:F3}, {activeReplicas} replicas, activated {active.ActivatedAt:u})"));
        Console.WriteLine(local.TokenLayers == 0
            ? string.Create(CultureInfo.InvariantCulture, $"local ratio (last {window.TotalMinutes:F0} min): no routing events")
            : string.Create(CultureInfo.InvariantCulture, $"local ratio (last {window.TotalMinutes:F0} min): layers {local.LayerLocal:F3}, expert calls {local.ExpertLocal:F3} over {local.TokenLayers} token-layers"));
        Console.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"migrations: {MigrationStateName.Running.Sum(state => migrationsByState.GetValueOrDefault(state))} running, {migrationsByState.GetValueOrDefault(MigrationStateName.Completed)} completed, {migrationsByState.GetValueOrDefault(MigrationStateName.Failed)} failed"));
        foreach (var m in migrations)
        {
            Console.WriteLine("  " + MigrationLine(m));
        }

        Console.WriteLine($"placement decisions (latest {decisions.Count}; {pendingSaga} waiting for the migration saga):");
        foreach (var d in decisions)
        {
            Console.WriteLine("  " + DecisionLine(d));
        }

        return ExitCodes.Ok;
    }

    internal static string DecisionLine(PlacementDecision d) => string.Create(
        CultureInfo.InvariantCulture,
        $"{d.DecidedAt:u} {d.Trigger,-8} {d.Algorithm} v{d.CurrentVersion?.ToString(CultureInfo.InvariantCulture) ?? "-"} -> v{d.CandidateVersion?.ToString(CultureInfo.InvariantCulture) ?? "-"}: {d.Decision} ({d.Status}) gain {d.PredictedGainSeconds?.ToString("F3", CultureInfo.InvariantCulture) ?? "-"} s, migration {d.MigrationCostSeconds?.ToString("F3", CultureInfo.InvariantCulture) ?? "-"} s: {d.Reason}{(d.MigrationId is { } id ? $" (migration {id})" : "")}");

    internal static string MigrationLine(MigrationState m)
    {
        var moves = MigrationProgress.Moves(m.Moves);
        var loads = moves.Count(x => x.Action == MigrationProgress.Load);
        var took = (m.FinishedAt ?? DateTimeOffset.UtcNow) - m.StartedAt;
        return string.Create(
            CultureInfo.InvariantCulture,
            $"{m.StartedAt:u} {m.CorrelationId} v{m.FromVersion} -> v{m.ToVersion}: {m.CurrentState}, loads {m.LoadsDone}/{loads}, unloads {m.UnloadsDone}/{moves.Count - loads}, {took.TotalSeconds:F1} s{(m.Reason is null ? "" : ": " + m.Reason)}");
    }

    internal static Dictionary<string, object?> MigrationJson(MigrationState m)
    {
        var moves = MigrationProgress.Moves(m.Moves);
        return new()
        {
            ["id"] = m.CorrelationId,
            ["state"] = m.CurrentState,
            ["decision_id"] = m.DecisionId,
            ["from_version"] = m.FromVersion,
            ["to_version"] = m.ToVersion,
            ["moves"] = moves.Count,
            ["loads_done"] = m.LoadsDone,
            ["loads"] = moves.Count(x => x.Action == MigrationProgress.Load),
            ["unloads_done"] = m.UnloadsDone,
            ["unloads"] = moves.Count(x => x.Action == MigrationProgress.Unload),
            ["started_at"] = m.StartedAt,
            ["finished_at"] = m.FinishedAt,
            ["deadline_at"] = m.DeadlineAt,
            ["reason"] = m.Reason,
        };
    }

    internal static Dictionary<string, object?> DecisionJson(PlacementDecision d) => new()
    {
        ["id"] = d.Id,
        ["migration_id"] = d.MigrationId,
        ["decided_at"] = d.DecidedAt,
        ["trigger"] = d.Trigger,
        ["command_id"] = d.CommandId,
        ["algorithm"] = d.Algorithm,
        ["current_version"] = d.CurrentVersion,
        ["candidate_version"] = d.CandidateVersion,
        ["decision"] = d.Decision,
        ["status"] = d.Status,
        ["reason"] = d.Reason,
        ["current_cost_seconds"] = d.CurrentCostSeconds,
        ["candidate_cost_seconds"] = d.CandidateCostSeconds,
        ["migration_cost_seconds"] = d.MigrationCostSeconds,
        ["predicted_gain_seconds"] = d.PredictedGainSeconds,
        ["loads"] = d.Loads,
        ["unloads"] = d.Unloads,
        ["bytes_moved"] = d.BytesMoved,
        ["edges"] = d.Edges,
        ["solve_ms"] = d.SolveMilliseconds,
    };

    private static async Task<(long, double?, double?)> LocalRatioAsync(DateTimeOffset from, CancellationToken cancellationToken)
    {
        await using var connection = new NpgsqlConnection(DatabaseOptions.ToNpgsql(CliEnvironment.PostgresUrl));
        await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(LocalRatioQuery, connection);
        command.Parameters.AddWithValue("from", from.ToUniversalTime());
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        return (reader.GetInt64(0), reader.IsDBNull(1) ? null : reader.GetDouble(1), reader.IsDBNull(2) ? null : reader.GetDouble(2));
    }
}
