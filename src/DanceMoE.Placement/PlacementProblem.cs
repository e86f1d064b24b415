namespace DanceMoE.Placement;

/// <summary>Everything a placement algorithm may use. <see cref="History"/> is needed only by the latency planner.</summary>
public sealed record PlacementProblem(MoeModel Model, Cluster Cluster, ActivationCounts Activations)
{
    public Workload? History { get; init; }

    public LatencyOptions Latency { get; init; } = new();

    /// <summary>
    /// Expert slots per server for the slot-based heuristics: budget / largest expert size (exact when sizes are equal,
    /// conservative otherwise, so a slot-feasible placement always fits in bytes).
    /// </summary>
    public int[] Slots()
    {
        var max = Model.MaxExpertBytes;
        return Cluster.Servers.Select(s => (int)Math.Min(s.MemoryBytes / max, (long)Model.ExpertCount)).ToArray();
    }

    /// <summary>Throws when no placement can cover every expert once.</summary>
    public void EnsureFeasible()
    {
        if (Activations.Servers != Cluster.Count || Activations.Layers != Model.Layers || Activations.Experts != Model.Experts)
        {
            throw new ArgumentException("activation counts do not match the model and cluster shape");
        }

        EnsureRoom(Model, Cluster.Servers.Select(s => s.MemoryBytes));
    }

    /// <summary>
    /// Throws when servers of <paramref name="memoryBytes"/> cannot hold every expert of <paramref name="model"/> once
    /// (counted in <see cref="Slots"/>' way): known from the budgets alone, before any workload is read or generated.
    /// </summary>
    public static void EnsureRoom(MoeModel model, IEnumerable<long> memoryBytes)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(memoryBytes);
        var slots = memoryBytes.Sum(bytes => Math.Min(bytes / model.MaxExpertBytes, (long)model.ExpertCount));
        if (slots < model.ExpertCount)
        {
            throw new InfeasiblePlacementException(
                $"the servers hold {slots} experts together but the model has {model.ExpertCount}: every expert needs a home");
        }
    }
}

/// <summary>No placement satisfies coverage and the memory budgets.</summary>
public sealed class InfeasiblePlacementException : Exception
{
    public InfeasiblePlacementException()
    {
    }

    public InfeasiblePlacementException(string message)
        : base(message)
    {
    }

    public InfeasiblePlacementException(string message, Exception inner)
        : base(message, inner)
    {
    }
}

/// <summary>
/// One placement algorithm. Implementations are deterministic (same problem, same placement) and keep no state
/// between calls, so one instance may serve any number of calls.
/// </summary>
public interface IPlacementAlgorithm
{
    string Name { get; }

    /// <summary>A placement that covers every expert within the budgets; long solvers stop early when <paramref name="cancellationToken"/> fires.</summary>
    /// <exception cref="InfeasiblePlacementException">No placement fits.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired.</exception>
    ExpertPlacement Place(PlacementProblem problem, CancellationToken cancellationToken = default);
}
