namespace DanceMoE.Model.Reference;

/// <summary>Keys (after RoPE) and values of every past position, per layer: [kv head][position][head dim].</summary>
public sealed class ReferenceKvCache(int layers)
{
    internal List<float[]>[] Keys { get; } = [.. Enumerable.Range(0, layers).Select(_ => new List<float[]>())];

    internal List<float[]>[] Values { get; } = [.. Enumerable.Range(0, layers).Select(_ => new List<float[]>())];

    public int Length => Keys.Length == 0 ? 0 : Keys[0].Count;
}
