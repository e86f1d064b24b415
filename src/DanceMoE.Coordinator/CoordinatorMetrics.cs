using System.Diagnostics.Metrics;
using DanceMoE.Hosting.Metrics;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;

namespace DanceMoE.Coordinator;

/// <summary>The coordinator's instruments (meter <c>DanceMoE.Coordinator</c>), named as Prometheus exposes them.</summary>
public sealed class CoordinatorMetrics : IDisposable
{
    public const string MeterName = "DanceMoE.Coordinator";

    private readonly Histogram<double> _duration;
    private long _started;
    private long _completed;
    private long _failed;

    // The registry needs the bus, whose saga needs these metrics: both are read only when a scrape observes them.
    public CoordinatorMetrics(IServiceProvider services, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(time);
        var registry = new Lazy<PlacementRegistry>(services.GetRequiredService<PlacementRegistry>);
        var membership = new Lazy<ClusterMembership>(services.GetRequiredService<ClusterMembership>);
        Meter = new Meter(MeterName);
        // Observed rather than added to, so that a scrape shows them at 0 before the first migration.
        Meter.CreateObservableCounter("dancemoe_migrations_started", () => Interlocked.Read(ref _started), "{migration}", "Migration sagas this coordinator started");
        Meter.CreateObservableCounter("dancemoe_migrations_completed", () => Interlocked.Read(ref _completed), "{migration}", "Migration sagas that completed");
        Meter.CreateObservableCounter("dancemoe_migrations_failed", () => Interlocked.Read(ref _failed), "{migration}", "Migration sagas that failed (compensated)");
        _duration = Meter.CreateHistogram<double>("dancemoe_migration_duration_seconds", "s", "Time from a migration's start to its end, by outcome (completed, failed)",
            tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600] });
        Meter.CreateObservableGauge("dancemoe_active_placement_version",
            () => registry.Value.KnownActiveVersion is { } v ? [new Measurement<int>(v)] : Array.Empty<Measurement<int>>(),
            "", "The active placement version, once the coordinator has read or activated it");
        Meter.CreateObservableGauge("dancemoe_edges_live", () => membership.Value.Alive(time.GetUtcNow()).Count, "{edge}", "Edges whose heartbeats are current");
    }

    public Meter Meter { get; }

    public void MigrationStarted() => Interlocked.Increment(ref _started);

    public void MigrationFinished(bool completed, TimeSpan duration)
    {
        Interlocked.Increment(ref completed ? ref _completed : ref _failed);
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
