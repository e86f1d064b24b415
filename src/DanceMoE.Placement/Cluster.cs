namespace DanceMoE.Placement;

/// <summary>One edge server: its memory budget for routed experts and its speed.</summary>
public sealed record ServerSpec(string Name, long MemoryBytes, double FlopsPerSecond, double MemoryBytesPerSecond)
{
    /// <summary>An edge GPU of about 100 TFLOPS (bf16) and 1 TB/s, scaled by <paramref name="speed"/>.</summary>
    public static ServerSpec Edge(string name, long memoryBytes, double speed = 1.0) =>
        new(name, memoryBytes, 100e12 * speed, 1e12 * speed);
}

/// <summary>A point-to-point link; bandwidth applies to each direction independently (full duplex).</summary>
public sealed record LinkSpec(double BytesPerSecond, double RttSeconds)
{
    public static LinkSpec FromMbps(double mbps, double rttMs) => new(mbps * 1e6 / 8, rttMs / 1e3);
}

/// <summary>Servers and the links between every ordered pair of them.</summary>
public sealed class Cluster
{
    private readonly LinkSpec[] _links;

    public Cluster(IReadOnlyList<ServerSpec> servers, Func<int, int, LinkSpec> link)
    {
        ArgumentNullException.ThrowIfNull(servers);
        ArgumentNullException.ThrowIfNull(link);
        if (servers.Count == 0)
        {
            throw new ArgumentException("a cluster needs at least one server", nameof(servers));
        }

        Servers = servers;
        _links = new LinkSpec[servers.Count * servers.Count];
        for (var a = 0; a < servers.Count; a++)
        {
            for (var b = 0; b < servers.Count; b++)
            {
                _links[(a * servers.Count) + b] = a == b ? new LinkSpec(double.PositiveInfinity, 0) : link(a, b);
            }
        }
    }

    public IReadOnlyList<ServerSpec> Servers { get; }

    public int Count => Servers.Count;

    public LinkSpec Link(int from, int to) => _links[(from * Servers.Count) + to];

    public static Cluster FullMesh(IReadOnlyList<ServerSpec> servers, LinkSpec link) => new(servers, (_, _) => link);
}
