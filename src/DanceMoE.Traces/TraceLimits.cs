using System.Globalization;

namespace DanceMoE.Traces;

/// <summary>Hard bounds of the schema (column types and checks); the options may only tighten them.</summary>
public static class TraceLimits
{
    public const int MaxEdgeIdLength = 64;
    public const int MaxWorkloadTagLength = 128;
    public const int MaxErrorLength = 4000;

    /// <summary>Why the history cannot keep <paramref name="tag"/> as a request's workload tag ("has 129 characters, ..."); null when it can.</summary>
    public static string? WorkloadTagProblem(string? tag)
    {
        if (tag is null)
        {
            return null;
        }

        if (tag.Length > MaxWorkloadTagLength)
        {
            return $"has {tag.Length} characters, at most {MaxWorkloadTagLength}";
        }

        // A label that breaks lines or carries terminal escapes would forge lines in logs and analysts' query output.
        foreach (var c in tag)
        {
            if (char.GetUnicodeCategory(c) is UnicodeCategory.Control or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator)
            {
                return string.Create(CultureInfo.InvariantCulture, $"contains U+{(int)c:X4}, a control character or line break");
            }
        }

        return null;
    }

    /// <summary><c>routing_events</c> checks 1..256 experts per row.</summary>
    public const int MaxExpertsPerRecord = 256;

    /// <summary>Layers and experts are <c>smallint</c>.</summary>
    public const int MaxSmallint = short.MaxValue;
}
