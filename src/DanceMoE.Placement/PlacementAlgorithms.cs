namespace DanceMoE.Placement;

/// <summary>
/// The placement algorithms by name: the one list the coordinator's options, its placement job and the CLI's
/// <c>placement simulate</c> choose from. Each call to <see cref="Create"/> returns a new instance.
/// </summary>
public static class PlacementAlgorithms
{
    public const string Uniform = "uniform";
    public const string Redundance = "redundance";
    public const string Eplb = "eplb";
    public const string DanceMoe = "dancemoe";
    public const string Optimal = "optimal";
    public const string Latency = "latency";

    /// <summary>Every algorithm's name, in the order reports list them.</summary>
    public static IReadOnlyList<string> Names { get; } = [Uniform, Redundance, Eplb, DanceMoe, Optimal, Latency];

    /// <summary>The algorithms that need only activation counts (<c>latency</c> also needs whole requests).</summary>
    public static IReadOnlyList<string> CountsOnly { get; } = [Uniform, Redundance, Eplb, DanceMoe, Optimal];

    /// <summary>One instance of every algorithm, in the order of <see cref="Names"/>.</summary>
    public static IReadOnlyList<IPlacementAlgorithm> All { get; } = [.. Names.Select(Create)];

    /// <summary>
    /// The algorithms a user listed, as <see cref="Names"/> spells them: each name known (any case) and listed once, so
    /// <c>eplb,EPLB</c> is a repeat. Checked before any work, by every front end that takes a list.
    /// </summary>
    /// <exception cref="ArgumentException">A name is unknown or listed twice; the message names it.</exception>
    public static IReadOnlyList<string> Chosen(IEnumerable<string> names)
    {
        var chosen = new List<string>();
        foreach (var name in names)
        {
            var known = Names.FirstOrDefault(n => string.Equals(n, name, StringComparison.OrdinalIgnoreCase))
                ?? throw new ArgumentException(Unknown(name));
            chosen.Add(chosen.Contains(known) ? throw new ArgumentException($"algorithm {known} is listed twice") : known);
        }

        return chosen;
    }

    /// <summary>The algorithm called <paramref name="name"/> (any case).</summary>
    /// <exception cref="ArgumentException">No algorithm has that name.</exception>
    public static IPlacementAlgorithm Create(string name) => name?.ToLowerInvariant() switch
    {
        Uniform => new UniformPlacement(),
        Redundance => new RedundancePlacement(),
        Eplb => new EplbPlacement(),
        DanceMoe => new DanceMoePlacement(),
        Optimal => new OptimalPlacement(),
        Latency => new LatencyPlacement(),
        _ => throw new ArgumentException(Unknown(name), nameof(name)),
    };

    private static string Unknown(string? name) => $"unknown algorithm '{name}' (known: {string.Join(", ", Names)})";
}
