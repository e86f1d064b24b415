using System.Globalization;
using System.Text.Json;
using DanceMoE.Placement;

namespace DanceMoE.Operations;

/// <summary>The results of <see cref="PlacementSimulation"/> as <c>placement simulate|bench</c> print them: JSON rows or a table.</summary>
public static class PlacementReport
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    /// <summary>
    /// Writes the results as a JSON array of <see cref="Row"/>s, or as the table (after <paramref name="description"/> when
    /// given), the lower bound when given, and the migration table when migrations from <paramref name="migrateFrom"/>
    /// were planned.
    /// </summary>
    public static void Write(
        TextWriter output, IReadOnlyList<AlgorithmResult> results, bool asJson, string? description = null,
        Dictionary<string, (MigrationPlan Plan, MigrationDecision Decision)>? migrations = null, string? migrateFrom = null,
        double horizonSeconds = 0, LatencyOptions? options = null, double? lowerBoundMs = null)
    {
        ArgumentNullException.ThrowIfNull(output);
        if (asJson)
        {
            output.WriteLine(JsonSerializer.Serialize(results.Select(r => Row(r, migrations?[r.Algorithm], lowerBoundMs)).ToList(), Json));
            return;
        }

        var lines = description is null ? [] : new[] { description }.AsEnumerable();
        lines = lines.Concat(Table(results));
        if (lowerBoundMs is { } bound)
        {
            lines = lines.Append(LowerBoundLine(results, bound));
        }

        if (migrations is not null)
        {
            lines = lines.Concat(MigrationTable(migrations, migrateFrom!, horizonSeconds, options ?? new LatencyOptions()));
        }

        foreach (var line in lines)
        {
            output.WriteLine(line);
        }
    }

    /// <summary>One JSON row per result: its metrics, the migration to it when one was planned, and the lower bound when given.</summary>
    public static Dictionary<string, object> Row(AlgorithmResult r, (MigrationPlan Plan, MigrationDecision Decision)? migration = null, double? lowerBoundMs = null)
    {
        ArgumentNullException.ThrowIfNull(r);
        var row = new Dictionary<string, object>
        {
            ["algorithm"] = r.Algorithm,
            ["local_ratio"] = Math.Round(r.Metrics.LocalRatio, 5),
            ["remote_calls_per_token"] = Math.Round(r.Metrics.RemoteCallsPerToken, 4),
            ["bytes_per_token"] = Math.Round(r.Metrics.BytesPerToken, 1),
            ["latency_ms_mean"] = Math.Round(r.Metrics.LatencyMsMean, 2),
            ["latency_ms_p99"] = Math.Round(r.Metrics.LatencyMsP99, 2),
            ["decode_ms_per_token"] = Math.Round(r.Metrics.DecodeMsPerToken, 3),
            ["decode_round_trip_ratio"] = Math.Round(r.Metrics.DecodeRoundTripRatio, 4),
            ["solve_ms"] = Math.Round(r.SolveMs, 1),
            ["replicas"] = r.Placement.TotalReplicas,
        };
        if (lowerBoundMs is { } bound)
        {
            row["lower_bound_latency_ms_mean"] = Math.Round(bound, 2);
        }

        if (migration is { } m)
        {
            row["migration_loads"] = m.Plan.Loads;
            row["migration_bytes"] = m.Plan.BytesMoved;
            row["migration_seconds"] = Math.Round(m.Plan.Seconds, 2);
            row["churn"] = Math.Round(m.Plan.Churn, 4);
            row["migrate"] = m.Decision.Migrate;
        }

        return row;
    }

    /// <summary>The table of results, and how much the latency planner's mean latency is under the others'.</summary>
    public static IEnumerable<string> Table(IReadOnlyList<AlgorithmResult> results)
    {
        ArgumentNullException.ThrowIfNull(results);
        yield return $"{"algorithm",-11} {"local",7} {"remote/tok",10} {"bytes/tok",10} {"mean ms",9} {"p99 ms",9} {"decode ms/tok",13} {"decode RT",9} {"solve ms",9}";
        foreach (var r in results)
        {
            var m = r.Metrics;
            yield return string.Create(CultureInfo.InvariantCulture,
                $"{r.Algorithm,-11} {m.LocalRatio,7:F3} {m.RemoteCallsPerToken,10:F2} {m.BytesPerToken,10:F0} {m.LatencyMsMean,9:F1} {m.LatencyMsP99,9:F1} {m.DecodeMsPerToken,13:F2} {m.DecodeRoundTripRatio,9:F3} {r.SolveMs,9:F0}");
        }

        if (results.FirstOrDefault(r => r.Algorithm == PlacementAlgorithms.Latency) is { } ours)
        {
            var gains = results
                .Where(r => r.Algorithm is PlacementAlgorithms.Eplb or PlacementAlgorithms.DanceMoe or PlacementAlgorithms.Optimal)
                .Select(r => string.Create(CultureInfo.InvariantCulture,
                    $"{100 * (1 - (ours.Metrics.LatencyMsMean / r.Metrics.LatencyMsMean)):F1}% under {r.Algorithm} (p99 {100 * (1 - (ours.Metrics.LatencyMsP99 / r.Metrics.LatencyMsP99)):F1}%)"))
                .ToList();
            if (gains.Count > 0)
            {
                yield return $"latency planner mean: {string.Join(", ", gains)}";
            }
        }
    }

    /// <summary>The lower bound on mean latency (<see cref="LatencyLowerBound"/>), and how far under <c>eplb</c> it is when <c>eplb</c> ran.</summary>
    public static string LowerBoundLine(IReadOnlyList<AlgorithmResult> results, double lowerBoundMs)
    {
        ArgumentNullException.ThrowIfNull(results);
        var eplb = results.FirstOrDefault(r => r.Algorithm == PlacementAlgorithms.Eplb);
        var under = eplb is null ? "" : string.Create(CultureInfo.InvariantCulture, $", {100 * (1 - (lowerBoundMs / eplb.Metrics.LatencyMsMean)):F1}% under eplb");
        return string.Create(CultureInfo.InvariantCulture,
            $"lower bound on mean ms for any placement (eval requests known, coverage relaxed): {lowerBoundMs:F1}{under}");
    }

    /// <summary>The migrations from <paramref name="from"/>, after a blank line: moves, time, churn and whether each pays.</summary>
    public static IEnumerable<string> MigrationTable(
        IReadOnlyDictionary<string, (MigrationPlan Plan, MigrationDecision Decision)> migrations, string from, double horizon, LatencyOptions latency)
    {
        ArgumentNullException.ThrowIfNull(migrations);
        ArgumentNullException.ThrowIfNull(latency);
        yield return "";
        yield return string.Create(CultureInfo.InvariantCulture, $"migration from {from} (horizon {horizon:F0} s, one request per {latency.RequestIntervalSeconds:F0} s per server):");
        yield return $"{"to",-11} {"loads",6} {"unloads",8} {"GB moved",9} {"T_mig s",8} {"churn",6} {"migrate",8}";
        foreach (var (name, (plan, decision)) in migrations)
        {
            yield return string.Create(CultureInfo.InvariantCulture,
                $"{name,-11} {plan.Loads,6} {plan.Unloads,8} {plan.BytesMoved / 1e9,9:F2} {plan.Seconds,8:F1} {plan.Churn,6:F2} {(decision.Migrate ? "yes" : "no"),8}");
        }
    }
}
