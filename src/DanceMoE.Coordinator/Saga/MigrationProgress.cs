using System.Globalization;
using System.Text.Json;
using DanceMoE.Contracts;

namespace DanceMoE.Coordinator.Saga;

/// <summary>
/// The bookkeeping of a migration saga, kept apart from the state machine so it reads and tests on its own: the moves,
/// the replicas the edges route by, and the replicas the migration loaded. A replica is the key <c>edge/layer/expert</c>.
/// </summary>
public static class MigrationProgress
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    public const string Load = "load";
    public const string Unload = "unload";

    public static string Key(string edgeId, int layer, int expert) => string.Create(CultureInfo.InvariantCulture, $"{edgeId}/{layer}/{expert}");

    public static string Key(ExpertMove move)
    {
        ArgumentNullException.ThrowIfNull(move);
        return Key(move.EdgeId, move.Layer, move.Expert);
    }

    public static (string EdgeId, int Layer, int Expert) Parse(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        var parts = key.Split('/');
        return (parts[0], int.Parse(parts[1], CultureInfo.InvariantCulture), int.Parse(parts[2], CultureInfo.InvariantCulture));
    }

    public static string SerializeMoves(IReadOnlyList<ExpertMove> moves) => JsonSerializer.Serialize(moves, Json);

    public static IReadOnlyList<ExpertMove> Moves(string json) => JsonSerializer.Deserialize<List<ExpertMove>>(json, Json) ?? [];

    public static SortedSet<string> Replicas(string json) => new(JsonSerializer.Deserialize<List<string>>(json, Json) ?? [], StringComparer.Ordinal);

    public static string Serialize(IEnumerable<string> replicas) => JsonSerializer.Serialize(replicas.Order(StringComparer.Ordinal).ToList(), Json);

    public static SortedSet<string> Replicas(IEnumerable<ExpertAssignment> assignments) =>
        new(assignments.SelectMany(a => a.Servers.Select(s => Key(s, a.Layer, a.Expert))), StringComparer.Ordinal);

    public static List<ExpertAssignment> Assignments(IEnumerable<string> replicas) =>
        [.. replicas.Select(Parse)
            .GroupBy(r => (r.Layer, r.Expert))
            .OrderBy(g => g.Key.Layer).ThenBy(g => g.Key.Expert)
            .Select(g => new ExpertAssignment { Layer = g.Key.Layer, Expert = g.Key.Expert, Servers = g.Select(r => r.EdgeId).Order(StringComparer.Ordinal).ToList() })];

    /// <summary>
    /// What the edges route by before the unloads that start at <paramref name="index"/>: every replica routed or loaded
    /// by the migration, less the replicas those consecutive unloads drop. Each dropped expert keeps another replica (the
    /// planner orders moves so); a plan that breaks this is refused rather than followed.
    /// </summary>
    public static SortedSet<string> RoutingBeforeUnloads(IReadOnlyList<ExpertMove> moves, int index, IEnumerable<string> routed, IEnumerable<string> loaded)
    {
        ArgumentNullException.ThrowIfNull(moves);
        var next = new SortedSet<string>(routed, StringComparer.Ordinal);
        next.UnionWith(loaded);
        for (var i = index; i < moves.Count && moves[i].Action == Unload; i++)
        {
            next.Remove(Key(moves[i]));
        }

        var uncovered = moves.Skip(index).TakeWhile(m => m.Action == Unload)
            .FirstOrDefault(m => !next.Any(r => Parse(r) is var p && p.Layer == m.Layer && p.Expert == m.Expert));
        return uncovered is null
            ? next
            : throw new InvalidOperationException($"unloading expert {uncovered.Layer}.{uncovered.Expert} from {uncovered.EdgeId} would leave it without a replica");
    }

    /// <summary>
    /// Where compensation goes back to: the replicas routed now, less the ones the migration loaded wherever the expert
    /// keeps another replica. Equal to the old placement as long as the migration has unloaded nothing.
    /// </summary>
    public static SortedSet<string> Fallback(IEnumerable<string> routed, IEnumerable<string> loaded)
    {
        var fallback = new SortedSet<string>(routed, StringComparer.Ordinal);
        foreach (var key in loaded)
        {
            var (_, layer, expert) = Parse(key);
            if (fallback.Contains(key) && fallback.Any(r => r != key && Parse(r) is var p && p.Layer == layer && p.Expert == expert))
            {
                fallback.Remove(key);
            }
        }

        return fallback;
    }
}
