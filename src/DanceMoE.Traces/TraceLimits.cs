namespace DanceMoE.Traces;

/// <summary>Hard bounds of the schema (column types and checks); the options may only tighten them.</summary>
public static class TraceLimits
{
    public const int MaxEdgeIdLength = 64;
    public const int MaxWorkloadTagLength = 128;
    public const int MaxErrorLength = 4000;

    /// <summary>Why the history cannot keep <paramref name="tag"/> as a request's workload tag ("has 129 characters, ..."); null when it can.</summary>
    public static string? WorkloadTagProblem(string? tag) =>
        tag is null ? null
        : tag.Length > MaxWorkloadTagLength ? $"has {tag.Length} characters, at most {MaxWorkloadTagLength}"
        : tag.Contains('\0', StringComparison.Ordinal) ? "contains a NUL character"
        : null;

    /// <summary><c>routing_events</c> checks 1..256 experts per row.</summary>
    public const int MaxExpertsPerRecord = 256;

    /// <summary>Layers and experts are <c>smallint</c>.</summary>
    public const int MaxSmallint = short.MaxValue;
}
