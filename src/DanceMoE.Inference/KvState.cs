namespace DanceMoE.Inference;

/// <summary>
/// The KV cache of one sequence: per layer, keys and values [capacity, kv heads, head dim], allocated once for the
/// sequence's longest length; each forward step appends its rows in place after the first <see cref="Length"/>.
/// </summary>
public sealed class KvState
{
    internal KvState(int layers, int rowWidth, int capacity)
    {
        RowWidth = rowWidth;
        Capacity = capacity;
        Keys = new float[layers][];
        Values = new float[layers][];
        for (var l = 0; l < layers; l++)
        {
            Keys[l] = new float[capacity * rowWidth];
            Values[l] = new float[capacity * rowWidth];
        }
    }

    internal float[][] Keys { get; }

    internal float[][] Values { get; }

    /// <summary>Floats per position and layer: kv heads x head dim.</summary>
    internal int RowWidth { get; }

    /// <summary>The most positions this cache holds.</summary>
    public int Capacity { get; }

    public int Length { get; internal set; }
}
