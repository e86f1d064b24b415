using System.Diagnostics;

namespace DanceMoE.Placement;

/// <summary>
/// Our planner: minimises the modelled mean request latency of the history requests instead of the call count.
/// <para>
/// Why the call count is not enough: a decode step at a layer avoids a round trip only when ALL top-k experts of the
/// token are local, and a step whose remote experts have replicas on several peers is spread over them by the edges'
/// replica choice, one message each. So slots spread by frequency still pay round trips almost everywhere, while
/// whole layers make a layer free for their holders and send everyone else's tokens to one peer. Prefill instead pays
/// for bytes. The mean latency is a sum over layers given the sets, so <see cref="WholeLayerStart"/> chooses which
/// servers hold each layer whole on the model's own steps (<see cref="LayerSteps"/>), and
/// <see cref="SlotExchangeSearch"/> then trades single experts on the model. Layers of more than 64 experts (or tokens naming
/// one twice) take the older path: <see cref="LayerSlotPlanner"/> (each server's sets priced over its token sets, chosen by knapsack) and
/// <see cref="LayerSwapSearch"/>.
/// </para>
/// It never returns a layout that models slower on the history than the exact optimum of the call count, which it
/// returns without history. A spent <see cref="TimeBudget"/> ends the search (and, on the older path, stops trying
/// further coverage prices once one layout is found); the result is then no longer reproducible. Cancellation throws,
/// as for every algorithm.
/// </summary>
public sealed class LatencyPlacement : IPlacementAlgorithm
{
    public string Name => PlacementAlgorithms.Latency;

    /// <summary>Time after which the planner returns the best layout found so far; null for no limit.</summary>
    public TimeSpan? TimeBudget { get; init; }

    /// <summary>Without a <see cref="TimeBudget"/>, the search on the model stops this long after the start (ESFT-4 is to solve in 5 s).</summary>
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

        // The optimum is priced on the history while the planner runs (its search runs on one core), each on its own model.
        var optimalMs = Task.Run(() => new LatencyModel(problem.Model, problem.Cluster, problem.Latency).Evaluate(optimal, history).LatencyMsMean, cancellationToken);
        var spent = () => clock.Elapsed >= (TimeBudget ?? SearchUntil);
        var planned = LayerSteps.CanPrice(problem.Model, history.Requests) ? PlanOnLayerSteps(problem, history, clock, spent, cancellationToken) : PlanBySlots(problem, clock, spent, cancellationToken);
        if (planned is null)
        {
            return optimal;
        }

        // The layouts are chosen on an approximation of the model; the model itself keeps the optimum when it is better.
        var model = new LatencyModel(problem.Model, problem.Cluster, problem.Latency);
        return model.Evaluate(planned, history).LatencyMsMean <= optimalMs.GetAwaiter().GetResult() ? planned : optimal;
    }

    /// <summary>Whole layers priced on the model's own steps, searched from (the slot planner's layout when no whole-layer layout fits).</summary>
    private ExpertPlacement? PlanOnLayerSteps(PlacementProblem problem, Workload history, Stopwatch clock, Func<bool> spent, CancellationToken cancellationToken)
    {
        var steps = new LayerSteps[problem.Model.Layers];
        Parallel.For(
            0,
            steps.Length,
            new ParallelOptions { CancellationToken = cancellationToken },
            l => steps[l] = new LayerSteps(problem, l, history.Requests));
        var planned = WholeLayerStart.Plan(problem, steps, cancellationToken) ?? LayerSlotPlanner.Plan(problem, spent, cancellationToken);
        if (planned is null)
        {
            return null;
        }

        // The steps copy the model's rules: should the model's options price a step otherwise, searching them would chase another model.
        if (!LayerSteps.PriceAsTheModel(steps, problem, planned, history))
        {
            return PlanBySlots(problem, clock, spent, cancellationToken);
        }

        SlotExchangeSearch.Improve(problem, planned, steps, spent, cancellationToken);
        return planned;
    }

    /// <summary>The slot planner's layout, then swaps searched on the model (where <see cref="LayerSteps"/> cannot price the history).</summary>
    private ExpertPlacement? PlanBySlots(PlacementProblem problem, Stopwatch clock, Func<bool> spent, CancellationToken cancellationToken)
    {
        var planned = LayerSlotPlanner.Plan(problem, () => TimeBudget is { } budget && clock.Elapsed >= budget, cancellationToken);
        if (planned is not null)
        {
            LayerSwapSearch.Improve(problem, planned, spent, cancellationToken);
        }

        return planned;
    }
}
