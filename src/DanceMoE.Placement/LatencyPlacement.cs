using System.Diagnostics;

namespace DanceMoE.Placement;

/// <summary>
/// Our planner: minimises the modelled mean request latency of the history requests instead of the call count.
/// <para>
/// Why the call count is not enough: a decode step at a layer avoids a round trip only when ALL top-k experts of the
/// token are local, so slots spread thinly by frequency over every layer still pay a round trip almost everywhere,
/// while the same slots concentrated into (nearly) whole layers make those layers free. Prefill instead pays for
/// bytes. The mean latency is a sum over servers and layers, so <see cref="LayerSlotPlanner"/> prices each server's
/// sets per layer over its whole token sets and chooses them by knapsack, with coverage priced.
/// </para>
/// It never returns a layout that models slower on the history than the exact optimum of the call count, which it
/// returns without history. A spent <see cref="TimeBudget"/> stops trying further coverage prices once one layout is
/// found (the result is then no longer reproducible); cancellation throws, as for every algorithm.
/// </summary>
public sealed class LatencyPlacement : IPlacementAlgorithm
{
    public string Name => PlacementAlgorithms.Latency;

    /// <summary>Time after which the planner returns the best layout found so far; null for no limit.</summary>
    public TimeSpan? TimeBudget { get; init; }

    /// <summary>Without a <see cref="TimeBudget"/>, the swap search on the model stops this long after the start (ESFT-4 is to solve in 5 s).</summary>
    private static readonly TimeSpan SearchUntil = TimeSpan.FromSeconds(3.5);

    public ExpertPlacement Place(PlacementProblem problem, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        problem.EnsureFeasible();
        var clock = Stopwatch.StartNew();
        var optimal = new OptimalPlacement().Place(problem, cancellationToken);
        if (problem.History is not { Requests.Count: > 0 } history)
        {
            return optimal;
        }

        var planned = LayerSlotPlanner.Plan(problem, () => TimeBudget is { } budget && clock.Elapsed >= budget, cancellationToken);
        if (planned is null)
        {
            return optimal;
        }

        var searchBudget = TimeBudget ?? SearchUntil;
        LayerSwapSearch.Improve(problem, planned, () => clock.Elapsed >= searchBudget, cancellationToken);

        // The layouts are chosen on an approximation of the model; the model itself keeps the optimum when it is better.
        var model = new LatencyModel(problem.Model, problem.Cluster, problem.Latency);
        return model.Evaluate(planned, history).LatencyMsMean <= model.Evaluate(optimal, history).LatencyMsMean ? planned : optimal;
    }
}
