using System.Diagnostics;

namespace DanceMoE.Placement;

/// <summary>One algorithm's placement judged on the evaluation requests.</summary>
public sealed record AlgorithmResult(string Algorithm, ExpertPlacement Placement, PlacementMetrics Metrics, double SolveMs);

/// <summary>Computes each placement from the history and evaluates it on other requests, side by side.</summary>
public static class Simulation
{
    public static IReadOnlyList<AlgorithmResult> Run(PlacementProblem problem, Workload eval, IEnumerable<IPlacementAlgorithm> algorithms, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        ArgumentNullException.ThrowIfNull(eval);
        ArgumentNullException.ThrowIfNull(algorithms);
        var model = new LatencyModel(problem.Model, problem.Cluster, problem.Latency);
        var results = new List<AlgorithmResult>();
        foreach (var algorithm in algorithms)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var clock = Stopwatch.StartNew();
            var placement = algorithm.Place(problem, cancellationToken);
            var solveMs = clock.Elapsed.TotalMilliseconds;
            var violations = placement.Violations(problem.Model, problem.Cluster);
            if (violations.Count > 0)
            {
                throw new InvalidOperationException($"{algorithm.Name} produced an invalid placement: {violations[0]}");
            }

            results.Add(new AlgorithmResult(algorithm.Name, placement, model.Evaluate(placement, eval), solveMs));
        }

        return results;
    }
}
