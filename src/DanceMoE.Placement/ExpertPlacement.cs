using System.Numerics;

namespace DanceMoE.Placement;

/// <summary>Which servers hold which (layer, expert): a bit per (server, layer, expert); replicas allowed.</summary>
public sealed class ExpertPlacement
{
    private readonly ulong[] _bits;
    private readonly int _words;

    public ExpertPlacement(int servers, int layers, int experts)
    {
        Servers = servers;
        Layers = layers;
        Experts = experts;
        _words = (experts + 63) / 64;
        _bits = new ulong[servers * layers * _words];
    }

    private ExpertPlacement(ExpertPlacement other)
    {
        Servers = other.Servers;
        Layers = other.Layers;
        Experts = other.Experts;
        _words = other._words;
        _bits = (ulong[])other._bits.Clone();
    }

    public int Servers { get; }

    public int Layers { get; }

    public int Experts { get; }

    public bool Holds(int server, int layer, int expert) =>
        (_bits[Offset(server, layer) + (expert >> 6)] & (1UL << (expert & 63))) != 0;

    public void Add(int server, int layer, int expert) =>
        _bits[Offset(server, layer) + (expert >> 6)] |= 1UL << (expert & 63);

    public void Remove(int server, int layer, int expert) =>
        _bits[Offset(server, layer) + (expert >> 6)] &= ~(1UL << (expert & 63));

    /// <summary>The bit words of one server's experts in one layer (bit e of word e / 64).</summary>
    internal ReadOnlySpan<ulong> LayerBits(int server, int layer) => _bits.AsSpan(Offset(server, layer), _words);

    public int CountLayer(int server, int layer)
    {
        var count = 0;
        var offset = Offset(server, layer);
        for (var w = 0; w < _words; w++)
        {
            count += BitOperations.PopCount(_bits[offset + w]);
        }

        return count;
    }

    public int Count(int server)
    {
        var count = 0;
        for (var l = 0; l < Layers; l++)
        {
            count += CountLayer(server, l);
        }

        return count;
    }

    public int Replicas(int layer, int expert)
    {
        var count = 0;
        for (var n = 0; n < Servers; n++)
        {
            if (Holds(n, layer, expert))
            {
                count++;
            }
        }

        return count;
    }

    public long BytesOn(int server, MoeModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        long bytes = 0;
        for (var l = 0; l < Layers; l++)
        {
            for (var e = 0; e < Experts; e++)
            {
                if (Holds(server, l, e))
                {
                    bytes += model.Bytes(l, e);
                }
            }
        }

        return bytes;
    }

    public int TotalReplicas => Enumerable.Range(0, Servers).Sum(Count);

    public ExpertPlacement Clone() => new(this);

    public IEnumerable<(int Layer, int Expert)> On(int server)
    {
        for (var l = 0; l < Layers; l++)
        {
            for (var e = 0; e < Experts; e++)
            {
                if (Holds(server, l, e))
                {
                    yield return (l, e);
                }
            }
        }
    }

    /// <summary>Problems with this placement: an expert on no server, a server over its budget.</summary>
    public IReadOnlyList<string> Violations(MoeModel model, Cluster cluster)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(cluster);
        var problems = new List<string>();
        for (var l = 0; l < Layers; l++)
        {
            for (var e = 0; e < Experts; e++)
            {
                if (Replicas(l, e) == 0)
                {
                    problems.Add($"layer {l} expert {e} is on no server");
                }
            }
        }

        for (var n = 0; n < Servers; n++)
        {
            var bytes = BytesOn(n, model);
            if (bytes > cluster.Servers[n].MemoryBytes)
            {
                problems.Add($"server {cluster.Servers[n].Name} holds {bytes} bytes, budget {cluster.Servers[n].MemoryBytes}");
            }
        }

        return problems;
    }

    public bool SameAs(ExpertPlacement other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return Servers == other.Servers && Layers == other.Layers && Experts == other.Experts && _bits.AsSpan().SequenceEqual(other._bits);
    }

    private int Offset(int server, int layer) => ((server * Layers) + layer) * _words;
}
