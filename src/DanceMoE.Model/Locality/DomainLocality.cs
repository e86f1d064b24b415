namespace DanceMoE.Model.Locality;

/// <summary>One layer: each domain's expert distribution and the mean total-variation distance over domain pairs.</summary>
public sealed record LayerLocality(int Layer, IReadOnlyList<double[]> Distribution, double TvMean);

/// <summary>
/// How much a placement keeps local when server n serves domain n only and holds <see cref="Slots"/> experts per layer.
/// Local share: the fraction of (token, layer, chosen expert) activations whose expert is on the token's own server.
/// </summary>
public sealed record LocalityReport
{
    public required IReadOnlyList<string> Domains { get; init; }
    public required double Fraction { get; init; }
    public required int Slots { get; init; }
    public required IReadOnlyList<LayerLocality> Layers { get; init; }
    public required double TvMean { get; init; }

    /// <summary>Each server takes its own domain's most used experts per layer, then every expert is placed somewhere.</summary>
    public required double LocalShareAware { get; init; }

    /// <summary>Every server takes the globally most used experts per layer, then every expert is placed somewhere.</summary>
    public required double LocalSharePopular { get; init; }

    /// <summary>Experts spread over the servers in turn, ignoring all statistics.</summary>
    public required double LocalShareUniform { get; init; }

    /// <summary>The better of the two domain-agnostic placements.</summary>
    public double LocalShareAgnostic => Math.Max(LocalSharePopular, LocalShareUniform);

    /// <summary>False when the servers have too few slots to hold every expert of a layer.</summary>
    public required bool Covered { get; init; }
}

/// <summary>Domain locality of a model's routing: pure logic over activation counts [domain][layer][expert].</summary>
public static class DomainLocality
{
    public static int SlotsFor(double fraction, int experts) =>
        Math.Clamp((int)Math.Round(fraction * experts, MidpointRounding.AwayFromZero), 1, experts);

    public static LocalityReport Analyse(IReadOnlyList<string> domains, IReadOnlyList<IReadOnlyList<long[]>> counts, double fraction)
    {
        ArgumentNullException.ThrowIfNull(domains);
        ArgumentNullException.ThrowIfNull(counts);
        if (domains.Count < 2 || counts.Count != domains.Count)
        {
            throw new ArgumentException($"need counts for at least two domains (got {counts.Count} for {domains.Count} domains)", nameof(counts));
        }

        if (fraction is <= 0 or > 1)
        {
            throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "fraction of experts per server must be in (0, 1]");
        }

        var layers = counts[0].Count;
        var experts = counts[0][0].Length;
        if (counts.Any(d => d.Count != layers || d.Any(l => l.Length != experts)))
        {
            throw new ArgumentException("every domain needs the same layers and experts", nameof(counts));
        }

        var slots = SlotsFor(fraction, experts);
        var covered = slots * domains.Count >= experts;
        var perLayer = new List<LayerLocality>(layers);
        double aware = 0, popular = 0, uniform = 0, total = 0;
        for (var l = 0; l < layers; l++)
        {
            var usage = counts.Select(d => d[l].Select(c => (double)c).ToArray()).ToArray();
            var distribution = usage.Select(Normalise).ToList();
            perLayer.Add(new LayerLocality(l, distribution, MeanPairwiseTv(distribution)));

            var global = new double[experts];
            foreach (var u in usage)
            {
                for (var e = 0; e < experts; e++)
                {
                    global[e] += u[e];
                }
            }

            aware += Local(usage, AwarePlacement(usage, slots));
            popular += Local(usage, AwarePlacement([.. usage.Select(_ => global)], slots));
            uniform += Local(usage, UniformPlacement(domains.Count, experts, slots));
            total += global.Sum();
        }

        return new LocalityReport
        {
            Domains = domains,
            Fraction = fraction,
            Slots = slots,
            Layers = perLayer,
            TvMean = perLayer.Average(l => l.TvMean),
            LocalShareAware = total > 0 ? aware / total : 0,
            LocalSharePopular = total > 0 ? popular / total : 0,
            LocalShareUniform = total > 0 ? uniform / total : 0,
            Covered = covered,
        };
    }

    /// <summary>
    /// Server n takes the <paramref name="slots"/> experts it uses most (ties: lower index); then each expert no server
    /// took, most used first, replaces the duplicated expert that its holder uses least. Returns held[server][expert].
    /// </summary>
    public static bool[][] AwarePlacement(IReadOnlyList<double[]> usage, int slots)
    {
        ArgumentNullException.ThrowIfNull(usage);
        var experts = usage[0].Length;
        var held = usage.Select(u => TopIndices(u, slots).Aggregate(new bool[experts], (h, e) => { h[e] = true; return h; })).ToArray();
        var total = Enumerable.Range(0, experts).Select(e => usage.Sum(u => u[e])).ToArray();
        var missing = Enumerable.Range(0, experts).Where(e => !held.Any(h => h[e])).OrderByDescending(e => total[e]).ThenBy(e => e);
        foreach (var e in missing)
        {
            var best = (Server: -1, Expert: -1, Use: double.PositiveInfinity);
            for (var n = 0; n < held.Length; n++)
            {
                for (var x = 0; x < experts; x++)
                {
                    if (held[n][x] && held.Count(h => h[x]) > 1 && usage[n][x] < best.Use)
                    {
                        best = (n, x, usage[n][x]);
                    }
                }
            }

            if (best.Server < 0)
            {
                break;
            }

            held[best.Server][best.Expert] = false;
            held[best.Server][e] = true;
        }

        return held;
    }

    /// <summary>Server n holds experts n·slots, n·slots+1, ... (mod E): every expert once before any twice.</summary>
    public static bool[][] UniformPlacement(int servers, int experts, int slots)
    {
        var held = new bool[servers][];
        for (var n = 0; n < servers; n++)
        {
            held[n] = new bool[experts];
            for (var j = 0; j < slots; j++)
            {
                held[n][((n * slots) + j) % experts] = true;
            }
        }

        return held;
    }

    public static double TotalVariation(IReadOnlyList<double> p, IReadOnlyList<double> q)
    {
        ArgumentNullException.ThrowIfNull(p);
        ArgumentNullException.ThrowIfNull(q);
        return 0.5 * p.Select((v, i) => Math.Abs(v - q[i])).Sum();
    }

    private static double MeanPairwiseTv(List<double[]> distributions)
    {
        var sum = 0.0;
        var pairs = 0;
        for (var a = 0; a < distributions.Count; a++)
        {
            for (var b = a + 1; b < distributions.Count; b++)
            {
                sum += TotalVariation(distributions[a], distributions[b]);
                pairs++;
            }
        }

        return sum / pairs;
    }

    private static double Local(double[][] usage, bool[][] held)
    {
        var local = 0.0;
        for (var n = 0; n < usage.Length; n++)
        {
            for (var e = 0; e < usage[n].Length; e++)
            {
                if (held[n][e])
                {
                    local += usage[n][e];
                }
            }
        }

        return local;
    }

    private static double[] Normalise(double[] counts)
    {
        var sum = counts.Sum();
        return [.. counts.Select(c => sum > 0 ? c / sum : 0)];
    }

    private static IEnumerable<int> TopIndices(double[] values, int count) =>
        Enumerable.Range(0, values.Length).OrderByDescending(i => values[i]).ThenBy(i => i).Take(count);
}
