namespace DanceMoE.Inference;

/// <summary>The KV cache of one sequence: per layer, keys and values [kv heads, length, head dim].</summary>
public sealed class KvState
{
    internal KvState(int layers)
    {
        Keys = new float[layers][];
        Values = new float[layers][];
        Array.Fill(Keys, []);
        Array.Fill(Values, []);
    }

    internal float[][] Keys { get; }

    internal float[][] Values { get; }

    public int Length { get; internal set; }
}
