using Google.OrTools.Graph;
using Google.OrTools.Sat;

namespace DanceMoE.Placement;

/// <summary>
/// The exact optimum of the paper's objective: maximise the activations served locally (equivalently minimise
/// remote calls) subject to coverage and memory. Equal expert sizes make it a transportation problem, solved exactly
/// as a min-cost flow:
/// <code>
/// source --(1, -BIG)------&gt; expert(l,e) --(1, -f[n][l][e])--&gt; server n --(slots n, 0)--&gt; sink
/// source --(N-1, 0)-------&gt; expert(l,e)
/// source --(sum slots, 0)-----------------------------------------------------------&gt; sink
/// </code>
/// BIG exceeds any total of f, so every expert gets its first unit (coverage) before any replica counts.
/// Unequal sizes make it a knapsack-like ILP, solved with CP-SAT.
/// </summary>
public sealed class OptimalPlacement : IPlacementAlgorithm
{
    public string Name => PlacementAlgorithms.Optimal;

    /// <summary>Time limit for the ILP (unequal sizes); the flow needs none.</summary>
    public double IlpSeconds { get; init; } = 60;

    public ExpertPlacement Place(PlacementProblem problem, CancellationToken cancellationToken = default) => Solve(problem, cancellationToken).Placement;

    /// <summary>The placement and whether the solver proved it optimal (the flow always does; the ILP may stop at its time limit).</summary>
    public OptimalSolution Solve(PlacementProblem problem, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        cancellationToken.ThrowIfCancellationRequested();
        if (problem.Model.EqualSizes)
        {
            problem.EnsureFeasible();
            return new OptimalSolution(SolveFlow(problem), ProvedOptimal: true);
        }

        return SolveIlp(problem, cancellationToken);
    }

    /// <summary>Integer costs for the solvers: counts stay exact; fractional weights are scaled to about 1e6 at the top.</summary>
    private static long[] IntegerWeights(PlacementProblem problem, out long total)
    {
        var model = problem.Model;
        var f = problem.Activations;
        var servers = problem.Cluster.Count;
        var values = new double[servers * model.ExpertCount];
        var integral = true;
        var max = 0.0;
        for (var n = 0; n < servers; n++)
        {
            for (var l = 0; l < model.Layers; l++)
            {
                for (var e = 0; e < model.Experts; e++)
                {
                    var v = Math.Max(0, f[n, l, e]);
                    values[(((n * model.Layers) + l) * model.Experts) + e] = v;
                    integral &= v == Math.Floor(v);
                    max = Math.Max(max, v);
                }
            }
        }

        var scale = integral && max * values.Length < 1e14 ? 1.0 : (max > 0 ? 1e6 / max : 1.0);
        var weights = values.Select(v => (long)Math.Round(v * scale)).ToArray();
        total = weights.Sum();
        return weights;
    }

    private static ExpertPlacement SolveFlow(PlacementProblem problem)
    {
        var model = problem.Model;
        var servers = problem.Cluster.Count;
        var slots = problem.Slots();
        var weights = IntegerWeights(problem, out var total);
        var big = total + 1;
        var experts = model.ExpertCount;
        var source = 0;
        var sink = experts + servers + 1;
        var flow = new MinCostFlow();
        var supply = slots.Sum(s => (long)s);
        var assignArcs = new int[servers * experts];
        for (var i = 0; i < experts; i++)
        {
            flow.AddArcWithCapacityAndUnitCost(source, 1 + i, 1, -big);
            if (servers > 1)
            {
                flow.AddArcWithCapacityAndUnitCost(source, 1 + i, servers - 1, 0);
            }

            for (var n = 0; n < servers; n++)
            {
                assignArcs[(n * experts) + i] = flow.AddArcWithCapacityAndUnitCost(1 + i, 1 + experts + n, 1, -weights[(n * experts) + i]);
            }
        }

        for (var n = 0; n < servers; n++)
        {
            flow.AddArcWithCapacityAndUnitCost(1 + experts + n, sink, slots[n], 0);
        }

        flow.AddArcWithCapacityAndUnitCost(source, sink, supply, 0);
        flow.SetNodeSupply(source, supply);
        flow.SetNodeSupply(sink, -supply);
        var status = flow.Solve();
        if (status != MinCostFlowBase.Status.OPTIMAL)
        {
            throw new InvalidOperationException($"min-cost flow ended with status {status}");
        }

        var placement = new ExpertPlacement(servers, model.Layers, model.Experts);
        for (var n = 0; n < servers; n++)
        {
            for (var i = 0; i < experts; i++)
            {
                if (flow.Flow(assignArcs[(n * experts) + i]) > 0)
                {
                    placement.Add(n, i / model.Experts, i % model.Experts);
                }
            }
        }

        return placement;
    }

    private OptimalSolution SolveIlp(PlacementProblem problem, CancellationToken cancellationToken)
    {
        var model = problem.Model;
        var servers = problem.Cluster.Count;
        var weights = IntegerWeights(problem, out _);
        var cp = new CpModel();
        var x = new BoolVar[servers * model.ExpertCount];
        for (var i = 0; i < x.Length; i++)
        {
            x[i] = cp.NewBoolVar($"x{i}");
        }

        for (var i = 0; i < model.ExpertCount; i++)
        {
            cp.AddBoolOr(Enumerable.Range(0, servers).Select(n => (ILiteral)x[(n * model.ExpertCount) + i]));
        }

        for (var n = 0; n < servers; n++)
        {
            var vars = new BoolVar[model.ExpertCount];
            var sizes = new long[model.ExpertCount];
            for (var i = 0; i < model.ExpertCount; i++)
            {
                vars[i] = x[(n * model.ExpertCount) + i];
                sizes[i] = model.ExpertBytes[i];
            }

            cp.Add(LinearExpr.WeightedSum(vars, sizes) <= problem.Cluster.Servers[n].MemoryBytes);
        }

        cp.Maximize(LinearExpr.WeightedSum(x, weights));
        // One worker: two race each other, and which of several equal optima wins then depends on the machine's load.
        var solver = new CpSolver
        {
            StringParameters = $"max_time_in_seconds:{IlpSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture)} num_workers:1 random_seed:1",
        };
        CpSolverStatus status;
        using (cancellationToken.Register(solver.StopSearch))
        {
            status = solver.Solve(cp);
        }

        cancellationToken.ThrowIfCancellationRequested();
        if (status is not (CpSolverStatus.Optimal or CpSolverStatus.Feasible))
        {
            throw new InfeasiblePlacementException($"no placement covers every expert within the budgets (CP-SAT: {status})");
        }

        var placement = new ExpertPlacement(servers, model.Layers, model.Experts);
        for (var n = 0; n < servers; n++)
        {
            for (var i = 0; i < model.ExpertCount; i++)
            {
                if (solver.BooleanValue(x[(n * model.ExpertCount) + i]))
                {
                    placement.Add(n, i / model.Experts, i % model.Experts);
                }
            }
        }

        return new OptimalSolution(placement, ProvedOptimal: status == CpSolverStatus.Optimal);
    }
}

/// <summary>What <see cref="OptimalPlacement.Solve"/> found, and whether the solver proved it optimal.</summary>
public sealed record OptimalSolution(ExpertPlacement Placement, bool ProvedOptimal);
