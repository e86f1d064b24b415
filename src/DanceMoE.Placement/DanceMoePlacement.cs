namespace DanceMoE.Placement;

/// <summary>
/// The published method (DanceMoE / Prism), two stages. Stage 1: each server's slots are split over layers in proportion
/// to the entropy of its activation distribution per layer, then repaired so every layer has at least E slots
/// cluster-wide (slots move from layers with surplus, bigger servers first). Stage 2: each server takes its most
/// activated experts per layer; an expert nobody took replaces the least-used duplicate on the server that holds the
/// most duplicates in that layer (that server's most activated unplaced expert goes in).
/// </summary>
public sealed class DanceMoePlacement : IPlacementAlgorithm
{
    public string Name => PlacementAlgorithms.DanceMoe;

    public ExpertPlacement Place(PlacementProblem problem, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        cancellationToken.ThrowIfCancellationRequested();
        problem.EnsureFeasible();
        var k = SlotsPerLayer(problem);
        return Assign(problem, k);
    }

    internal static int[,] SlotsPerLayer(PlacementProblem problem)
    {
        var model = problem.Model;
        var f = problem.Activations;
        var slots = problem.Slots();
        var servers = slots.Length;
        var layers = model.Layers;
        var experts = model.Experts;
        var k = new int[servers, layers];
        for (var n = 0; n < servers; n++)
        {
            var entropy = new double[layers];
            for (var l = 0; l < layers; l++)
            {
                var total = 0.0;
                for (var e = 0; e < experts; e++)
                {
                    total += f[n, l, e];
                }

                for (var e = 0; e < experts && total > 0; e++)
                {
                    var p = f[n, l, e] / total;
                    if (p > 0)
                    {
                        entropy[l] -= p * Math.Log(p);
                    }
                }
            }

            var sum = entropy.Sum();
            var share = sum > 0 ? entropy.Select(h => h / sum).ToArray() : Enumerable.Repeat(1.0 / layers, layers).ToArray();
            var capacity = Math.Min(slots[n], layers * experts);
            var raw = share.Select(s => s * capacity).ToArray();
            var given = 0;
            for (var l = 0; l < layers; l++)
            {
                k[n, l] = Math.Min(experts, (int)Math.Floor(raw[l]));
                given += k[n, l];
            }

            // Largest remainders first; a full layer passes its turn on.
            var order = Enumerable.Range(0, layers).OrderByDescending(l => raw[l] - Math.Floor(raw[l])).ThenBy(l => l).ToList();
            while (given < capacity)
            {
                var progressed = false;
                foreach (var l in order)
                {
                    if (given == capacity)
                    {
                        break;
                    }

                    if (k[n, l] < experts)
                    {
                        k[n, l]++;
                        given++;
                        progressed = true;
                    }
                }

                if (!progressed)
                {
                    break;
                }
            }
        }

        Repair(k, slots, experts);
        return k;
    }

    private static void Repair(int[,] k, int[] slots, int experts)
    {
        var servers = k.GetLength(0);
        var layers = k.GetLength(1);
        var total = new int[layers];
        for (var l = 0; l < layers; l++)
        {
            for (var n = 0; n < servers; n++)
            {
                total[l] += k[n, l];
            }
        }

        var bySize = Enumerable.Range(0, servers).OrderByDescending(n => slots[n]).ThenBy(n => n).ToList();
        for (var l = 0; l < layers; l++)
        {
            while (total[l] < experts)
            {
                var moved = false;
                foreach (var n in bySize)
                {
                    if (k[n, l] >= experts)
                    {
                        continue;
                    }

                    var donor = -1;
                    for (var d = 0; d < layers; d++)
                    {
                        if (d != l && k[n, d] > 0 && total[d] > experts && (donor < 0 || total[d] > total[donor]))
                        {
                            donor = d;
                        }
                    }

                    if (donor < 0)
                    {
                        continue;
                    }

                    k[n, donor]--;
                    total[donor]--;
                    k[n, l]++;
                    total[l]++;
                    moved = true;
                    break;
                }

                if (!moved)
                {
                    throw new InfeasiblePlacementException($"layer {l}: not enough slots to hold every expert once");
                }
            }
        }
    }

    private static ExpertPlacement Assign(PlacementProblem problem, int[,] k)
    {
        var model = problem.Model;
        var f = problem.Activations;
        var servers = k.GetLength(0);
        var placement = new ExpertPlacement(servers, model.Layers, model.Experts);
        for (var l = 0; l < model.Layers; l++)
        {
            for (var n = 0; n < servers; n++)
            {
                var layer = l;
                var server = n;
                foreach (var e in Enumerable.Range(0, model.Experts).OrderByDescending(e => f[server, layer, e]).ThenBy(e => e).Take(k[n, l]))
                {
                    placement.Add(n, l, e);
                }
            }

            var unplaced = Enumerable.Range(0, model.Experts).Where(e => placement.Replicas(l, e) == 0).ToHashSet();
            while (unplaced.Count > 0)
            {
                var host = -1;
                var hostDuplicates = 0;
                for (var n = 0; n < servers; n++)
                {
                    var duplicates = 0;
                    for (var e = 0; e < model.Experts; e++)
                    {
                        if (placement.Holds(n, l, e) && placement.Replicas(l, e) > 1)
                        {
                            duplicates++;
                        }
                    }

                    if (duplicates > hostDuplicates)
                    {
                        host = n;
                        hostDuplicates = duplicates;
                    }
                }

                if (host < 0)
                {
                    throw new InfeasiblePlacementException($"layer {l}: no duplicate left to make room for an unplaced expert");
                }

                var evict = -1;
                for (var e = 0; e < model.Experts; e++)
                {
                    if (placement.Holds(host, l, e) && placement.Replicas(l, e) > 1 && (evict < 0 || f[host, l, e] <= f[host, l, evict]))
                    {
                        evict = e;
                    }
                }

                var bring = unplaced.OrderByDescending(e => f[host, l, e]).ThenBy(e => e).First();
                placement.Remove(host, l, evict);
                placement.Add(host, l, bring);
                unplaced.Remove(bring);
            }
        }

        return placement;
    }
}
