namespace DanceMoE.Model.Tests;

internal static class TinyModels
{
    /// <summary>Small enough that export and ONNX Runtime sessions take well under a second.</summary>
    public static TinyOptions Small(ulong seed = 7) => new()
    {
        Seed = seed,
        Layers = 2,
        Experts = 4,
        TopK = 2,
        Hidden = 32,
        Heads = 4,
        KvHeads = 2,
        MaxPositions = 128,
    };
}
