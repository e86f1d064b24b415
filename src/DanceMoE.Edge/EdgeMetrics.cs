using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Options;

namespace DanceMoE.Edge;

/// <summary>
/// The edge's instruments (meter <c>DanceMoE.Edge</c>), named as Prometheus exposes them. Recording costs next to nothing
/// while nothing listens (no <c>--metrics-port</c>); gauges are read from the runtime only when scraped. Recording can be
/// paused and resumed in a running edge (<see cref="Recording"/>), so that <c>bench load --metrics-overhead</c> compares
/// the same processes with and without it.
/// </summary>
public sealed class EdgeMetrics : IDisposable
{
    public const string MeterName = "DanceMoE.Edge";

    /// <summary>SIGUSR1 and SIGUSR2 on Linux: pause and resume recording.</summary>
    public const int PauseSignal = 10;
    public const int ResumeSignal = 12;

    private static readonly double[] SecondsBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
    private static readonly double[] StepBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

    private readonly Counter<long> _requests;
    private readonly Counter<long> _tokens;
    private readonly Histogram<double> _duration;
    private readonly Histogram<double> _firstToken;
    private readonly Histogram<double> _perToken;
    private readonly Counter<long> _expertCalls;
    private readonly Histogram<double> _peerRoundTrip;
    private readonly Counter<long> _activations;
    private readonly Counter<long> _peerBytes;
    private readonly ConcurrentDictionary<string, long> _peerFailures = new(StringComparer.Ordinal);
    private readonly object[] _numbers;
    private readonly bool _expertMetrics;
    private readonly string _edgeId;
    private readonly List<PosixSignalRegistration> _signals = [];
    private volatile bool _recording = true;
    private long _expertsLoaded;
    private long _expertLoadsFailed;
    private long _expertsUnloaded;

    public EdgeMetrics(IOptions<EdgeOptions> options)
    {
        ArgumentNullException.ThrowIfNull(options);
        Meter = new Meter(MeterName);
        _expertMetrics = options.Value.ExpertMetrics;
        _edgeId = options.Value.Id;
        _requests = Meter.CreateCounter<long>("dancemoe_requests", "{request}", "Generation requests this edge finished, by status (completed, failed, cancelled, rejected)");
        _tokens = Meter.CreateCounter<long>("dancemoe_generated_tokens", "{token}", "Tokens this edge generated for its requests");
        _duration = Meter.CreateHistogram<double>("dancemoe_request_duration_seconds", "s", "Time from a request's start to its answer",
            tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = SecondsBuckets });
        _firstToken = Meter.CreateHistogram<double>("dancemoe_time_to_first_token_seconds", "s", "Time from a request's start to its first generated token (prefill)",
            tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = SecondsBuckets });
        _perToken = Meter.CreateHistogram<double>("dancemoe_time_per_output_token_seconds", "s", "Time between consecutive generated tokens (one decode step)",
            tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = StepBuckets });
        _expertCalls = Meter.CreateCounter<long>("dancemoe_expert_calls", "{call}",
            "Expert calls of this edge's requests (one per expert, layer and forward step), run here (local) or on a peer (remote)");
        _peerRoundTrip = Meter.CreateHistogram<double>("dancemoe_peer_round_trip_seconds", "s", "Round trip of one expert batch to a peer, from send to its answer",
            tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = StepBuckets });
        _peerBytes = Meter.CreateCounter<long>("dancemoe_peer_batch_bytes", "By",
            "Bytes of this edge's expert batches on the bus, by peer: the batches it sent (direction=sent) and their answers (direction=received)");
        _activations = Meter.CreateCounter<long>("dancemoe_expert_activations", "{token}",
            "Token rows routed to each expert by this edge's requests (--expert-metrics only)");

        // Read at each scrape, so that they show (at 0) before any migration: rate() and the dashboard need the series.
        Meter.CreateObservableCounter("dancemoe_expert_loads", () => new[]
        {
            new Measurement<long>(Interlocked.Read(ref _expertsLoaded), new KeyValuePair<string, object?>("outcome", "loaded")),
            new Measurement<long>(Interlocked.Read(ref _expertLoadsFailed), new KeyValuePair<string, object?>("outcome", "failed")),
        }, "{expert}", "Experts this edge loaded on a migration's command (LoadExpert), by outcome (loaded, failed)");
        Meter.CreateObservableCounter("dancemoe_expert_unloads", () => Interlocked.Read(ref _expertsUnloaded), "{expert}",
            "Experts this edge held and dropped on a migration's command (UnloadExpert)");

        // Boxed once, so that a per-expert measurement allocates nothing.
        _numbers = _expertMetrics ? [.. Enumerable.Range(0, 4096).Select(i => (object)i.ToString(System.Globalization.CultureInfo.InvariantCulture))] : [];
    }

    public Meter Meter { get; }

    /// <summary>Whether per-layer, per-expert activation counters are recorded now (<c>--expert-metrics</c>, not paused).</summary>
    public bool ExpertActivationsEnabled => _expertMetrics && _recording;

    /// <summary>Whether measurements are recorded; false: every instrument is skipped, as if nothing listened.</summary>
    public bool Recording
    {
        get => _recording;
        set => _recording = value;
    }

    /// <summary>SIGUSR1 pauses recording, SIGUSR2 resumes it (Linux signal numbers).</summary>
    public void SwitchOnSignals()
    {
        _signals.Add(PosixSignalRegistration.Create((PosixSignal)PauseSignal, context =>
        {
            context.Cancel = true;
            Recording = false;
        }));
        _signals.Add(PosixSignalRegistration.Create((PosixSignal)ResumeSignal, context =>
        {
            context.Cancel = true;
            Recording = true;
        }));
    }

    /// <summary>Registers the gauges read from the runtime at each scrape.</summary>
    public void Observe(EdgeRuntime edge)
    {
        ArgumentNullException.ThrowIfNull(edge);
        Meter.CreateObservableGauge("dancemoe_requests_active", () => edge.Scheduler.ActiveCount, "{request}", "Generation requests in the step batch now");
        Meter.CreateObservableGauge("dancemoe_requests_waiting", () => edge.Scheduler.WaitingCount, "{request}", "Generation requests waiting for a slot in the step batch");
        Meter.CreateObservableGauge("dancemoe_experts_loaded", () => edge.Experts.Loaded().Count, "{expert}", "Experts this edge holds now");
        Meter.CreateObservableGauge("dancemoe_expert_memory_used_bytes", () => edge.Experts.UsedBytes, "By", "Memory the held experts' weights use");
        Meter.CreateObservableGauge("dancemoe_expert_memory_budget_bytes", () => edge.Experts.BudgetBytes, "By", "Memory this edge may spend on experts");
        Meter.CreateObservableGauge("dancemoe_expert_loads_in_progress", () => edge.ExpertLoads.Count, "{expert}",
            "Experts a migration is loading onto this edge now: while above 0 the edge is being rebalanced, and a balancer may prefer other edges");
        Meter.CreateObservableCounter("dancemoe_peer_batch_failures", () => PeerFailures(edge.Routing.Current), "{batch}",
            "Expert batches of this edge that a peer did not answer in time, refused or answered wrongly (each retried on another replica once), by peer");
        Meter.CreateObservableGauge("dancemoe_placement_version", () => edge.Routing.Current.Version, "", "Version of the placement this edge routes by");
        Meter.CreateObservableGauge("dancemoe_trace_rows_buffered", () => edge.Traces.State.Pending, "{row}", "Trace rows and summaries in memory, not yet written");
        Meter.CreateObservableGauge("dancemoe_trace_rows_spilled", () => edge.Traces.State.Spilled, "{row}", "Trace rows and summaries in spill files, waiting for replay");
        Meter.CreateObservableGauge("dancemoe_metrics_recording", () => _recording ? 1 : 0, "", "1 while measurements are recorded, 0 while paused (SIGUSR1 pauses, SIGUSR2 resumes)");
        Meter.CreateObservableCounter("dancemoe_trace_rows_lost", () => edge.Traces.State.Lost, "{row}", "Trace rows and summaries lost (neither written nor spilled)");
        Meter.CreateObservableCounter("dancemoe_trace_rows_duplicate", () => edge.Traces.State.RowsDuplicate, "{row}", "Trace rows not written because their request's rows were stored already (a request served again under its id, a replayed batch)");
        Meter.CreateObservableCounter("dancemoe_trace_request_id_conflicts", () => edge.Traces.State.RequestIdConflicts, "{request}", "Requests not stored because their id is stored for another request (another prompt, length, sampling or workload tag)");
        Meter.CreateObservableCounter("dancemoe_trace_rows_quarantined", () => edge.Traces.State.Quarantined, "{row}", "Trace rows PostgreSQL refused as data, set aside in .rejected files next to the spill files");
    }

    /// <summary>A request's end: its status, tokens, duration and expert calls (as its answer's stats count them).</summary>
    public void RequestFinished(string status, int tokens, TimeSpan duration, long localCalls, long remoteCalls)
    {
        if (!_recording)
        {
            return;
        }

        _requests.Add(1, new KeyValuePair<string, object?>("status", status));
        if (tokens > 0)
        {
            _tokens.Add(tokens);
        }

        _duration.Record(duration.TotalSeconds);
        _expertCalls.Add(localCalls, new KeyValuePair<string, object?>("locality", "local"));
        _expertCalls.Add(remoteCalls, new KeyValuePair<string, object?>("locality", "remote"));
    }

    /// <summary>A request that was refused before it ran.</summary>
    public void RequestRejected()
    {
        if (_recording)
        {
            _requests.Add(1, new KeyValuePair<string, object?>("status", "rejected"));
        }
    }

    public void TokenProduced(int index, TimeSpan sincePrevious)
    {
        if (_recording)
        {
            (index == 0 ? _firstToken : _perToken).Record(sincePrevious.TotalSeconds);
        }
    }

    public void PeerRoundTrip(string peer, TimeSpan elapsed)
    {
        if (_recording)
        {
            _peerRoundTrip.Record(elapsed.TotalSeconds, new KeyValuePair<string, object?>("peer", peer));
        }
    }

    public void PeerBatchBytes(string peer, int sent, int received)
    {
        if (_recording)
        {
            var to = new KeyValuePair<string, object?>("peer", peer);
            _peerBytes.Add(sent, to, new KeyValuePair<string, object?>("direction", "sent"));
            _peerBytes.Add(received, to, new KeyValuePair<string, object?>("direction", "received"));
        }
    }

    /// <summary>A batch sent to <paramref name="peer"/> failed there (counted whether or not recording is paused, as loads are).</summary>
    public void PeerBatchFailed(string peer) => _peerFailures.AddOrUpdate(peer, 1, (_, n) => n + 1);

    /// <summary>A migration's load of an expert ended (a cancelled or failed load counts as failed).</summary>
    public void ExpertLoaded(bool succeeded) => Interlocked.Increment(ref succeeded ? ref _expertsLoaded : ref _expertLoadsFailed);

    public void ExpertUnloaded() => Interlocked.Increment(ref _expertsUnloaded);

    public void ExpertActivated(int layer, int expert, int rows)
    {
        if (ExpertActivationsEnabled && layer < _numbers.Length && expert < _numbers.Length)
        {
            _activations.Add(rows, new KeyValuePair<string, object?>("layer", _numbers[layer]), new KeyValuePair<string, object?>("expert", _numbers[expert]));
        }
    }

    // Every peer of the placement shows, at 0 until one of its batches fails, so that increase() sees the first failure.
    private IEnumerable<Measurement<long>> PeerFailures(EdgePlacement placement)
    {
        var peers = new SortedSet<string>(placement.Assignments.SelectMany(a => a.Servers), StringComparer.Ordinal);
        peers.UnionWith(_peerFailures.Keys);
        peers.Remove(_edgeId);
        return peers.Select(p => new Measurement<long>(_peerFailures.GetValueOrDefault(p), new KeyValuePair<string, object?>("peer", p)));
    }

    public void Dispose()
    {
        foreach (var signal in _signals)
        {
            signal.Dispose();
        }

        Meter.Dispose();
    }
}
