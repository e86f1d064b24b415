namespace DanceMoE.Placement;

/// <summary>
/// A start for the search made of whole layers: each layer is held whole by a set of servers, chosen per layer from
/// every non-empty set of servers by the layer's modelled time on the history (<see cref="LayerSteps"/>), within every
/// server's slots.
/// <para>
/// Why whole layers: a decoded token costs a round trip unless all of its experts are local, and when the experts it
/// needs have replicas on several peers the edges' replica choice spreads them over those peers, one message each. A
/// layer held whole by one server sends every other server's tokens to that one peer; held whole by all, it is free. On
/// ESFT-4 such layouts model faster than slots spread by frequency (and than the same layouts with one server also
/// holding half or a quarter of a layer it lacks), and single swaps do not lead from one to the other.
/// </para>
/// The budgets couple the layers: a price per slot of each server (a Lagrangian relaxation) lets every layer choose
/// alone; the prices follow the servers' overuse, each round's choice is repaired to fit, and the best is polished by
/// changing one or two layers' choices at a time.
/// </summary>
internal static class WholeLayerStart
{
    private const int Rounds = 200;
    private const int MaxServers = 6;

    /// <summary>The best layout of this kind within the budgets, or null when none fits (a server cannot hold any layer, or too many servers).</summary>
    public static ExpertPlacement? Plan(PlacementProblem problem, IReadOnlyList<LayerSteps> steps, CancellationToken cancellationToken)
    {
        var servers = problem.Cluster.Count;
        var layers = problem.Model.Layers;
        var experts = problem.Model.Experts;
        if (servers > MaxServers)
        {
            return null;
        }

        var slots = problem.Slots();
        var options = new Option[layers][];
        Parallel.For(
            0,
            layers,
            new ParallelOptions { CancellationToken = cancellationToken },
            l => options[l] = [.. Options(problem).Select(holds => new Option(holds, holds.Select(h => BitCount(h)).ToArray(), steps[l].Price(holds)))]);

        var spread = options.Average(o => o.Max(x => x.Seconds) - o.Min(x => x.Seconds));
        var price = new double[servers];
        var chosen = new int[layers];
        int[]? best = null;
        var bestCost = double.MaxValue;
        for (var round = 0; round < Rounds; round++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            for (var l = 0; l < layers; l++)
            {
                var bestPriced = double.MaxValue;
                for (var o = 0; o < options[l].Length; o++)
                {
                    var priced = options[l][o].Seconds;
                    for (var s = 0; s < servers; s++)
                    {
                        priced += price[s] * options[l][o].Uses[s];
                    }

                    if (priced < bestPriced)
                    {
                        (bestPriced, chosen[l]) = (priced, o);
                    }
                }
            }

            var used = Used(options, chosen, servers);
            var step = spread / experts / (1 + (round / 10.0));
            for (var s = 0; s < servers; s++)
            {
                price[s] = Math.Max(0, price[s] + (step * (used[s] - slots[s]) / Math.Max(1, slots[s])));
            }

            var repaired = Repair(options, (int[])chosen.Clone(), slots);
            if (repaired is not null && Total(options, repaired) < bestCost)
            {
                (best, bestCost) = (repaired, Total(options, repaired));
            }
        }

        if (Exact(options, slots, experts) is { } exact && (best is null || Total(options, exact) < bestCost))
        {
            best = exact;
        }

        if (best is null)
        {
            return null;
        }

        Polish(options, best, slots);
        var placement = new ExpertPlacement(servers, layers, experts);
        for (var l = 0; l < layers; l++)
        {
            for (var s = 0; s < servers; s++)
            {
                for (var e = 0; e < experts; e++)
                {
                    if ((options[l][best[l]].Holds[s] & (1UL << e)) != 0)
                    {
                        placement.Add(s, l, e);
                    }
                }
            }
        }

        return placement;
    }

    /// <summary>Every non-empty set of servers holding the layer whole.</summary>
    private static IEnumerable<ulong[]> Options(PlacementProblem problem)
    {
        var servers = problem.Cluster.Count;
        var experts = problem.Model.Experts;
        var all = experts == 64 ? ulong.MaxValue : (1UL << experts) - 1;
        for (var set = 1; set < 1 << servers; set++)
        {
            yield return Enumerable.Range(0, servers).Select(s => (set & (1 << s)) != 0 ? all : 0).ToArray();
        }
    }

    /// <summary>
    /// The cheapest choice of whole-layer options within the slots, by dynamic programming over how many whole layers each
    /// server holds so far (the layers' times add up, so the best choice for the layers so far depends only on those
    /// counts); null when there are too many count combinations to walk.
    /// </summary>
    private static int[]? Exact(Option[][] options, int[] slots, int experts)
    {
        const int MaxStates = 1 << 20;
        var servers = slots.Length;
        var caps = slots.Select(s => s / experts).ToArray();
        var radix = new int[servers];
        var states = 1L;
        for (var s = 0; s < servers; s++)
        {
            radix[s] = (int)states;
            states *= caps[s] + 1;
            if (states > MaxStates)
            {
                return null;
            }
        }

        var layers = options.Length;
        var cost = new double[states];
        Array.Fill(cost, double.PositiveInfinity);
        cost[0] = 0;
        var from = new int[layers][];
        var via = new int[layers][];
        var counts = new int[servers];
        for (var l = 0; l < layers; l++)
        {
            var next = new double[states];
            Array.Fill(next, double.PositiveInfinity);
            (from[l], via[l]) = (new int[states], new int[states]);
            for (var state = 0; state < states; state++)
            {
                if (double.IsPositiveInfinity(cost[state]))
                {
                    continue;
                }

                for (var s = 0; s < servers; s++)
                {
                    counts[s] = state / radix[s] % (caps[s] + 1);
                }

                for (var o = 0; o < options[l].Length; o++)
                {
                    var target = state;
                    for (var s = 0; s < servers && target >= 0; s++)
                    {
                        var add = options[l][o].Uses[s] / experts;
                        target = counts[s] + add > caps[s] ? -1 : target + (add * radix[s]);
                    }

                    if (target >= 0 && cost[state] + options[l][o].Seconds < next[target])
                    {
                        next[target] = cost[state] + options[l][o].Seconds;
                        (from[l][target], via[l][target]) = (state, o);
                    }
                }
            }

            cost = next;
        }

        var end = -1;
        for (var state = 0; state < states; state++)
        {
            end = !double.IsPositiveInfinity(cost[state]) && (end < 0 || cost[state] < cost[end]) ? state : end;
        }

        if (end < 0)
        {
            return null;
        }

        var chosen = new int[layers];
        for (var l = layers - 1; l >= 0; l--)
        {
            chosen[l] = via[l][end];
            end = from[l][end];
        }

        return chosen;
    }

    /// <summary>
    /// Takes servers over their slots out of the layers where that costs least, choosing for such a layer another option
    /// that uses fewer of its slots and leaves every other server within its own. Null when that is not enough.
    /// </summary>
    private static int[]? Repair(Option[][] options, int[] chosen, int[] slots)
    {
        var servers = slots.Length;
        var used = Used(options, chosen, servers);
        for (var s = 0; s < servers; s++)
        {
            while (used[s] > slots[s])
            {
                var (layer, to, increase) = (-1, 0, double.MaxValue);
                for (var l = 0; l < chosen.Length; l++)
                {
                    var current = options[l][chosen[l]];
                    for (var o = 0; o < options[l].Length; o++)
                    {
                        var option = options[l][o];
                        var fits = option.Uses[s] < current.Uses[s];
                        for (var t = 0; t < servers && fits; t++)
                        {
                            fits = t == s || used[t] - current.Uses[t] + option.Uses[t] <= Math.Max(slots[t], used[t]);
                        }

                        if (fits && option.Seconds - current.Seconds < increase)
                        {
                            (layer, to, increase) = (l, o, option.Seconds - current.Seconds);
                        }
                    }
                }

                if (layer < 0)
                {
                    return null;
                }

                chosen[layer] = to;
                used = Used(options, chosen, servers);
            }
        }

        return chosen;
    }

    /// <summary>Changes one layer's option, or two layers' options at once, while that lowers the total within the slots.</summary>
    private static void Polish(Option[][] options, int[] chosen, int[] slots)
    {
        var servers = slots.Length;
        var layers = chosen.Length;
        var used = Used(options, chosen, servers);
        bool Fits(int a, int oa, int b, int ob)
        {
            for (var s = 0; s < servers; s++)
            {
                var u = used[s] - options[a][chosen[a]].Uses[s] + options[a][oa].Uses[s];
                u += b < 0 ? 0 : options[b][ob].Uses[s] - options[b][chosen[b]].Uses[s];
                if (u > slots[s])
                {
                    return false;
                }
            }

            return true;
        }

        while (true)
        {
            var (bestGain, bestA, bestOa, bestB, bestOb) = (1e-12, -1, 0, -1, 0);
            for (var a = 0; a < layers; a++)
            {
                for (var oa = 0; oa < options[a].Length; oa++)
                {
                    var gainA = options[a][chosen[a]].Seconds - options[a][oa].Seconds;
                    if (gainA <= 0)
                    {
                        continue;
                    }

                    if (gainA > bestGain && Fits(a, oa, -1, 0))
                    {
                        (bestGain, bestA, bestOa, bestB, bestOb) = (gainA, a, oa, -1, 0);
                    }

                    for (var b = 0; b < layers; b++)
                    {
                        for (var ob = 0; ob < options[b].Length && b != a; ob++)
                        {
                            var gain = gainA + options[b][chosen[b]].Seconds - options[b][ob].Seconds;
                            if (gain > bestGain && Fits(a, oa, b, ob))
                            {
                                (bestGain, bestA, bestOa, bestB, bestOb) = (gain, a, oa, b, ob);
                            }
                        }
                    }
                }
            }

            if (bestA < 0)
            {
                return;
            }

            chosen[bestA] = bestOa;
            if (bestB >= 0)
            {
                chosen[bestB] = bestOb;
            }

            used = Used(options, chosen, servers);
        }
    }

    private static double Total(Option[][] options, int[] chosen) => chosen.Select((o, l) => options[l][o].Seconds).Sum();

    private static int[] Used(Option[][] options, int[] chosen, int servers)
    {
        var used = new int[servers];
        for (var l = 0; l < chosen.Length; l++)
        {
            for (var s = 0; s < servers; s++)
            {
                used[s] += options[l][chosen[l]].Uses[s];
            }
        }

        return used;
    }

    private static int BitCount(ulong set) => System.Numerics.BitOperations.PopCount(set);

    /// <summary>One way to hold a layer: each server's experts, how many, and the layer's modelled seconds on the history.</summary>
    private sealed record Option(ulong[] Holds, int[] Uses, double Seconds);
}
