using DanceMoE.Hosting.Metrics;
using MassTransit;

namespace DanceMoE.Edge;

/// <summary><c>/readyz</c> of an edge: its experts loaded (the runtime built), its bus connected, the placement it routes by loaded here.</summary>
public sealed class EdgeReadiness(IBusControl bus) : IReadinessCheck
{
    private EdgeRuntime? _runtime;

    /// <summary>Called once the model and the placement's experts are loaded.</summary>
    public void Loaded(EdgeRuntime runtime) => Volatile.Write(ref _runtime, runtime);

    public Readiness Check()
    {
        var runtime = Volatile.Read(ref _runtime);
        return Evaluate(runtime?.Options.Id, bus.CheckHealth().Status == BusHealthStatus.Healthy, runtime?.Routing.Current, runtime is null ? null : runtime.Experts.Holds);
    }

    /// <summary>The decision, apart from where its inputs come from; <paramref name="edgeId"/> null: the runtime is still loading.</summary>
    public static Readiness Evaluate(string? edgeId, bool busHealthy, EdgePlacement? placement, Func<int, int, bool>? holds)
    {
        if (edgeId is null || placement is null || holds is null)
        {
            return Readiness.No("loading the model and the placement's experts");
        }

        if (!busHealthy)
        {
            return Readiness.No($"{edgeId}: bus not connected");
        }

        var mine = placement.ExpertsOf(edgeId).ToList();
        var missing = mine.Where(x => !holds(x.Layer, x.Expert)).ToList();
        if (missing.Count > 0)
        {
            return Readiness.No(FormattableString.Invariant(
                $"{edgeId}: {missing.Count} of the {mine.Count} experts placement v{placement.Version} gives it are not loaded (first {missing[0].Layer}.{missing[0].Expert})"));
        }

        return Readiness.Yes(FormattableString.Invariant($"{edgeId}: ready, placement v{placement.Version}, {mine.Count} experts loaded"));
    }
}
