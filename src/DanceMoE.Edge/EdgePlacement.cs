using DanceMoE.Contracts;
using DanceMoE.Hosting;

namespace DanceMoE.Edge;

/// <summary>One placement version: which servers hold each expert of each layer.</summary>
public sealed class EdgePlacement
{
    private readonly Dictionary<(int Layer, int Expert), string[]> _servers = [];

    public EdgePlacement(int version, IEnumerable<ExpertAssignment> assignments, DateTimeOffset activatedAt = default)
    {
        ArgumentNullException.ThrowIfNull(assignments);
        Version = version;
        ActivatedAt = activatedAt;
        foreach (var a in assignments)
        {
            if (a is null)
            {
                throw new PlacementException($"placement v{version} has an empty (null) assignment");
            }

            var servers = a.Servers?.Where(s => !string.IsNullOrWhiteSpace(s)).Distinct(StringComparer.Ordinal).ToArray() ?? [];
            if (servers.Select(EdgeQueues.Problem).FirstOrDefault(p => p is not null) is { } problem)
            {
                throw new PlacementException($"placement v{version} gives expert {a.Layer}.{a.Expert} to a server that is no edge: {problem}");
            }

            if (!_servers.TryAdd((a.Layer, a.Expert), servers))
            {
                throw new PlacementException($"placement v{version} lists expert {a.Layer}.{a.Expert} twice");
            }
        }

        Assignments = [.. _servers.OrderBy(kv => kv.Key).Select(kv => new ExpertAssignment { Layer = kv.Key.Layer, Expert = kv.Key.Expert, Servers = kv.Value })];
    }

    public int Version { get; }

    /// <summary>When the coordinator activated it; the default for a bootstrap placement read from a file.</summary>
    public DateTimeOffset ActivatedAt { get; }

    /// <summary>
    /// Whether this edge should switch from <paramref name="current"/> to this one. Activation time decides, not the
    /// version number: a migration's target is registered before the intermediate versions it activates on the way.
    /// </summary>
    public bool Supersedes(EdgePlacement current)
    {
        ArgumentNullException.ThrowIfNull(current);
        return ActivatedAt > current.ActivatedAt || (ActivatedAt == current.ActivatedAt && Version > current.Version);
    }

    public IReadOnlyList<ExpertAssignment> Assignments { get; }

    public IReadOnlyList<string> ServersOf(int layer, int expert) =>
        _servers.TryGetValue((layer, expert), out var servers) ? servers : [];

    public IEnumerable<(int Layer, int Expert)> ExpertsOf(string server) =>
        _servers.Where(kv => kv.Value.Contains(server, StringComparer.Ordinal)).Select(kv => kv.Key).Order();

    /// <summary>Every expert of the model must live somewhere, and nothing outside the model may be named.</summary>
    public void Validate(int layers, int experts)
    {
        foreach (var (layer, expert) in _servers.Keys)
        {
            if (layer < 0 || layer >= layers || expert < 0 || expert >= experts)
            {
                throw new PlacementException($"placement v{Version} names expert {layer}.{expert}, outside the model's {layers} layers x {experts} experts");
            }
        }

        for (var l = 0; l < layers; l++)
        {
            for (var e = 0; e < experts; e++)
            {
                if (ServersOf(l, e).Count == 0)
                {
                    throw new PlacementException($"placement v{Version} gives no server to expert {l}.{e}: every expert needs a replica");
                }
            }
        }
    }
}
