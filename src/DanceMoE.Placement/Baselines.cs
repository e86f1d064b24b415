namespace DanceMoE.Placement;

/// <summary>Expert parallelism's default: every expert once, spread over servers in proportion to their slots.</summary>
public sealed class UniformPlacement : IPlacementAlgorithm
{
    public string Name => PlacementAlgorithms.Uniform;

    public ExpertPlacement Place(PlacementProblem problem, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        cancellationToken.ThrowIfCancellationRequested();
        problem.EnsureFeasible();
        var slots = problem.Slots();
        var model = problem.Model;
        var placement = new ExpertPlacement(problem.Cluster.Count, model.Layers, model.Experts);
        var used = new int[slots.Length];
        for (var l = 0; l < model.Layers; l++)
        {
            for (var e = 0; e < model.Experts; e++)
            {
                var best = -1;
                for (var n = 0; n < slots.Length; n++)
                {
                    if (used[n] < slots[n] && (best < 0 || (used[n] + 1.0) / slots[n] < (used[best] + 1.0) / slots[best]))
                    {
                        best = n;
                    }
                }

                placement.Add(best, l, e);
                used[best]++;
            }
        }

        return placement;
    }
}

/// <summary>Uniform, then every server fills its spare slots with the globally hottest experts it lacks.</summary>
public sealed class RedundancePlacement : IPlacementAlgorithm
{
    public string Name => PlacementAlgorithms.Redundance;

    public ExpertPlacement Place(PlacementProblem problem, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        cancellationToken.ThrowIfCancellationRequested();
        var placement = new UniformPlacement().Place(problem, cancellationToken);
        var model = problem.Model;
        var hottest = Enumerable.Range(0, model.ExpertCount)
            .Select(i => (Layer: i / model.Experts, Expert: i % model.Experts))
            .OrderByDescending(x => problem.Activations.Global(x.Layer, x.Expert))
            .ThenBy(x => x.Layer)
            .ThenBy(x => x.Expert)
            .ToList();
        var slots = problem.Slots();
        for (var n = 0; n < slots.Length; n++)
        {
            var free = slots[n] - placement.Count(n);
            foreach (var (layer, expert) in hottest)
            {
                if (free == 0)
                {
                    break;
                }

                if (!placement.Holds(n, layer, expert))
                {
                    placement.Add(n, layer, expert);
                    free--;
                }
            }
        }

        return placement;
    }
}

/// <summary>
/// DeepSeek's expert-parallel load balancer, global policy, per layer: extra slots replicate the expert with the highest
/// load per replica; replicas (load / replicas) are packed heaviest first into the least loaded server with room.
/// Made memory-aware: each server's slots are split evenly over layers (so servers have unequal slot counts), "least
/// loaded" is load per slot of the server, and a server never takes two replicas of one expert.
/// </summary>
public sealed class EplbPlacement : IPlacementAlgorithm
{
    public string Name => PlacementAlgorithms.Eplb;

    public ExpertPlacement Place(PlacementProblem problem, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        cancellationToken.ThrowIfCancellationRequested();
        problem.EnsureFeasible();
        var model = problem.Model;
        var slots = problem.Slots();
        var servers = slots.Length;
        var perLayer = new int[servers, model.Layers];
        var next = 0;
        for (var n = 0; n < servers; n++)
        {
            var total = Math.Min(slots[n], model.ExpertCount);
            for (var l = 0; l < model.Layers; l++)
            {
                perLayer[n, l] = total / model.Layers;
            }

            // The remainder rotates over layers across servers so that layer totals differ by at most one.
            for (var r = 0; r < total % model.Layers; r++)
            {
                perLayer[n, next] = Math.Min(perLayer[n, next] + 1, model.Experts);
                next = (next + 1) % model.Layers;
            }
        }

        var placement = new ExpertPlacement(servers, model.Layers, model.Experts);
        for (var l = 0; l < model.Layers; l++)
        {
            var layerSlots = Enumerable.Range(0, servers).Sum(n => perLayer[n, l]);
            var load = Enumerable.Range(0, model.Experts).Select(e => problem.Activations.Global(l, e) + 1e-9).ToArray();
            var replicas = Enumerable.Repeat(1, model.Experts).ToArray();
            for (var extra = layerSlots - model.Experts; extra > 0; extra--)
            {
                var best = -1;
                for (var e = 0; e < model.Experts; e++)
                {
                    if (replicas[e] < servers && (best < 0 || load[e] / replicas[e] > load[best] / replicas[best]))
                    {
                        best = e;
                    }
                }

                if (best < 0)
                {
                    break;
                }

                replicas[best]++;
            }

            var items = Enumerable.Range(0, model.Experts)
                .SelectMany(e => Enumerable.Repeat(e, replicas[e]))
                .OrderByDescending(e => load[e] / replicas[e])
                .ThenBy(e => e)
                .ToList();
            var packLoad = new double[servers];
            var packCount = new int[servers];
            foreach (var e in items)
            {
                var weight = load[e] / replicas[e];
                var best = -1;
                for (var n = 0; n < servers; n++)
                {
                    if (packCount[n] >= perLayer[n, l] || placement.Holds(n, l, e))
                    {
                        continue;
                    }

                    if (best < 0 || (packLoad[n] + weight) / perLayer[n, l] < (packLoad[best] + weight) / perLayer[best, l])
                    {
                        best = n;
                    }
                }

                if (best < 0)
                {
                    continue;
                }

                placement.Add(best, l, e);
                packLoad[best] += weight;
                packCount[best]++;
            }
        }

        return placement;
    }
}
