namespace DanceMoE.Placement;

/// <summary>
/// Local search on the latency model itself: in each layer, a server swaps an expert it holds (and another server also
/// holds) for one it lacks when the history's requests model faster. A layer's modelled time depends only on that
/// layer's sets, so the layers are searched in parallel and a swap is judged by re-running its layer alone.
/// </summary>
internal static class LayerSwapSearch
{
    private const int Candidates = 6;
    private const int Passes = 3;

    /// <summary>Improves <paramref name="placement"/> in place until no swap helps, <see cref="Passes"/> are done or <paramref name="spent"/>.</summary>
    public static void Improve(PlacementProblem problem, ExpertPlacement placement, Func<bool> spent, CancellationToken cancellationToken)
    {
        var requests = problem.History!.Requests;
        Parallel.For(
            0,
            problem.Model.Layers,
            new ParallelOptions { CancellationToken = cancellationToken },
            () => new LatencyModel(problem.Model, problem.Cluster, problem.Latency),
            (layer, _, model) =>
            {
                ImproveLayer(problem, model, placement, requests, layer, spent, cancellationToken);
                return model;
            },
            _ => { });
    }

    private static void ImproveLayer(
        PlacementProblem problem, LatencyModel model, ExpertPlacement placement, IReadOnlyList<TraceRequest> requests, int layer, Func<bool> spent, CancellationToken cancellationToken)
    {
        var f = problem.Activations;
        var experts = problem.Model.Experts;
        var current = model.LayerSeconds(placement, requests, layer);
        for (var pass = 0; pass < Passes; pass++)
        {
            var improved = false;
            for (var n = 0; n < placement.Servers; n++)
            {
                var server = n;
                var drops = Enumerable.Range(0, experts)
                    .Where(e => placement.Holds(server, layer, e) && placement.Replicas(layer, e) >= 2)
                    .OrderBy(e => f[server, layer, e]).ThenBy(e => e).Take(Candidates).ToList();
                var adds = Enumerable.Range(0, experts)
                    .Where(e => !placement.Holds(server, layer, e))
                    .OrderByDescending(e => f[server, layer, e]).ThenBy(e => e).Take(Candidates).ToList();
                foreach (var drop in drops)
                {
                    foreach (var add in adds.Where(a => !placement.Holds(server, layer, a)))
                    {
                        cancellationToken.ThrowIfCancellationRequested();
                        if (spent())
                        {
                            return;
                        }

                        placement.Remove(server, layer, drop);
                        placement.Add(server, layer, add);
                        var seconds = model.LayerSeconds(placement, requests, layer);
                        if (seconds < current - 1e-9)
                        {
                            current = seconds;
                            improved = true;
                            break;
                        }

                        placement.Remove(server, layer, add);
                        placement.Add(server, layer, drop);
                    }
                }
            }

            if (!improved)
            {
                return;
            }
        }
    }
}
