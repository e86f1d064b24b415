using System.Diagnostics.Metrics;
using DanceMoE.Hosting.Metrics;
using MassTransit;

namespace DanceMoE.Coordinator;

/// <summary>The coordinator's instruments (meter <c>DanceMoE.Coordinator</c>), named as Prometheus exposes them.</summary>
public sealed class CoordinatorMetrics : IDisposable
{
    public const string MeterName = "DanceMoE.Coordinator";

    private readonly Counter<long> _started;
    private readonly Counter<long> _completed;
    private readonly Counter<long> _failed;
    private readonly Histogram<double> _duration;

    public CoordinatorMetrics(ClusterMembership membership, PlacementRegistry registry, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(membership);
        ArgumentNullException.ThrowIfNull(registry);
        ArgumentNullException.ThrowIfNull(time);
        Meter = new Meter(MeterName);
        _started = Meter.CreateCounter<long>("dancemoe_migrations_started", "{migration}", "Migration sagas started");
        _completed = Meter.CreateCounter<long>("dancemoe_migrations_completed", "{migration}", "Migration sagas that completed");
        _failed = Meter.CreateCounter<long>("dancemoe_migrations_failed", "{migration}", "Migration sagas that failed (compensated)");
        _duration = Meter.CreateHistogram<double>("dancemoe_migration_duration_seconds", "s", "Time from a migration's start to its end, by outcome (completed, failed)",
            tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600] });
        Meter.CreateObservableGauge("dancemoe_active_placement_version",
            () => registry.KnownActiveVersion is { } v ? [new Measurement<int>(v)] : Array.Empty<Measurement<int>>(),
            "", "The active placement version, once the coordinator has read or activated it");
        Meter.CreateObservableGauge("dancemoe_edges_live", () => membership.Alive(time.GetUtcNow()).Count, "{edge}", "Edges whose heartbeats are current");
    }

    public Meter Meter { get; }

    public void MigrationStarted() => _started.Add(1);

    public void MigrationFinished(bool completed, TimeSpan duration)
    {
        (completed ? _completed : _failed).Add(1);
        _duration.Record(duration.TotalSeconds, new KeyValuePair<string, object?>("outcome", completed ? "completed" : "failed"));
    }

    public void Dispose() => Meter.Dispose();
}

/// <summary><c>/readyz</c> of the coordinator: its bus connected.</summary>
public sealed class CoordinatorReadiness(IBusControl bus) : IReadinessCheck
{
    public Readiness Check() => bus.CheckHealth().Status == BusHealthStatus.Healthy
        ? Readiness.Yes("coordinator: ready")
        : Readiness.No("coordinator: bus not connected");
}
