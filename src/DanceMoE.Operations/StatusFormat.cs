using System.Globalization;
using System.Text.Json;
using DanceMoE.Coordinator.Saga;
using DanceMoE.Data;

namespace DanceMoE.Operations;

/// <summary>How a placement decision and a migration are shown: one text line each, or a snake-case JSON object.</summary>
public static class StatusFormat
{
    /// <summary>Snake-case, indented: the JSON of <c>dancemoe status</c> and <c>placement run-now</c>.</summary>
    public static JsonSerializerOptions Json { get; } = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    /// <summary>One line per decision: when, why, the versions, the outcome and its costs.</summary>
    public static string DecisionLine(PlacementDecision d) => string.Create(
        CultureInfo.InvariantCulture,
        $"{d.DecidedAt:u} {d.Trigger,-8} {d.Algorithm} v{d.CurrentVersion?.ToString(CultureInfo.InvariantCulture) ?? "-"} -> v{d.CandidateVersion?.ToString(CultureInfo.InvariantCulture) ?? "-"}: {d.Decision} ({d.Status}) gain {d.PredictedGainSeconds?.ToString("F3", CultureInfo.InvariantCulture) ?? "-"} s, migration {d.MigrationCostSeconds?.ToString("F3", CultureInfo.InvariantCulture) ?? "-"} s: {d.Reason}{(d.MigrationId is { } id ? $" (migration {id})" : "")}");

    /// <summary>One line per migration: its versions, state, progress of loads and unloads, and how long it took so far.</summary>
    public static string MigrationLine(MigrationState m)
    {
        var moves = MigrationProgress.Moves(m.Moves);
        var loads = moves.Count(x => x.Action == MigrationProgress.Load);
        var took = (m.FinishedAt ?? DateTimeOffset.UtcNow) - m.StartedAt;
        return string.Create(
            CultureInfo.InvariantCulture,
            $"{m.StartedAt:u} {m.CorrelationId} v{m.FromVersion} -> v{m.ToVersion}: {m.CurrentState}, loads {m.LoadsDone}/{loads}, unloads {m.UnloadsDone}/{moves.Count - loads}, {took.TotalSeconds:F1} s{(m.Reason is null ? "" : ": " + m.Reason)}");
    }

    /// <summary>A migration as a JSON object, with its move counts.</summary>
    public static Dictionary<string, object?> MigrationJson(MigrationState m)
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

    /// <summary>A decision as a JSON object: every column of its row.</summary>
    public static Dictionary<string, object?> DecisionJson(PlacementDecision d) => new()
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
}
