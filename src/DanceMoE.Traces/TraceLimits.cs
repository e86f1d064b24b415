namespace DanceMoE.Traces;

/// <summary>Hard bounds of the schema (column types and checks); the options may only tighten them.</summary>
public static class TraceLimits
{
    public const int MaxEdgeIdLength = 64;
    public const int MaxWorkloadTagLength = 128;
    public const int MaxErrorLength = 4000;

    /// <summary><c>routing_events</c> checks 1..256 experts per row.</summary>
    public const int MaxExpertsPerRecord = 256;

    /// <summary>Layers and experts are <c>smallint</c>.</summary>
    public const int MaxSmallint = short.MaxValue;
}
