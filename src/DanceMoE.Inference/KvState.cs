namespace DanceMoE.Inference;

/// <summary>
/// The KV cache of one sequence: per routed layer, keys [capacity, heads, key dim] and values [capacity, heads, value dim]
/// (heads: the cache heads of every decoder layer its dense subgraph runs), allocated once for the sequence's longest
/// length; each forward step appends its rows in place after the first <see cref="Length"/>.
/// </summary>
public sealed class KvState
{
    internal KvState(IReadOnlyList<int> keyWidths, IReadOnlyList<int> valueWidths, int capacity)
    {
        KeyWidths = keyWidths;
        ValueWidths = valueWidths;
        Capacity = capacity;
        Keys = [.. keyWidths.Select(w => new float[capacity * w])];
        Values = [.. valueWidths.Select(w => new float[capacity * w])];
    }

    internal float[][] Keys { get; }

    internal float[][] Values { get; }

    /// <summary>Floats per position of each layer's keys and values.</summary>
    internal IReadOnlyList<int> KeyWidths { get; }

    internal IReadOnlyList<int> ValueWidths { get; }

    /// <summary>The most positions this cache holds.</summary>
    public int Capacity { get; }

    public int Length { get; internal set; }
}
