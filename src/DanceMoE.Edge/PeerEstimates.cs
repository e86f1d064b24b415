namespace DanceMoE.Edge;

/// <summary>
/// What this edge has measured of its peers: a moving average of each one's expert-batch round trips, the queue depth it
/// last reported, and whether it failed since it last answered. One per edge; every dispatch reads and writes it.
/// </summary>
public sealed class PeerEstimates
{
    /// <summary>Weight of the newest round trip in the moving average.</summary>
    public const double Smoothing = 0.3;

    /// <summary>The estimate of every peer while no peer has been measured.</summary>
    public const double UnmeasuredMs = 10;

    private readonly Dictionary<string, PeerState> _peers = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();
    private long _failures;

    /// <summary>A batch sent to <paramref name="peer"/> was answered after <paramref name="roundTrip"/>; a failed peer is trusted again.</summary>
    public void Observe(string peer, TimeSpan roundTrip)
    {
        ArgumentException.ThrowIfNullOrEmpty(peer);
        ArgumentOutOfRangeException.ThrowIfLessThan(roundTrip, TimeSpan.Zero);
        var ms = roundTrip.TotalMilliseconds;
        lock (_lock)
        {
            var state = StateOf(peer);
            state.RoundTripMs = state.RoundTripMs is { } average ? average + (Smoothing * (ms - average)) : ms;
            state.FailedAt = null;
        }
    }

    /// <summary>The number of expert batches <paramref name="peer"/> said it was serving when it last answered.</summary>
    public void ObserveQueueDepth(string peer, int depth)
    {
        ArgumentException.ThrowIfNullOrEmpty(peer);
        lock (_lock)
        {
            StateOf(peer).QueueDepth = Math.Max(0, depth);
        }
    }

    /// <summary>A batch to <paramref name="peer"/> timed out or faulted: it is avoided until it answers again.</summary>
    public void Failed(string peer)
    {
        ArgumentException.ThrowIfNullOrEmpty(peer);
        lock (_lock)
        {
            StateOf(peer).FailedAt = ++_failures;
        }
    }

    /// <summary>
    /// The peer's averaged round trip in milliseconds. A peer never measured gets the mean of the measured ones (or
    /// <see cref="UnmeasuredMs"/>), the same for all of them, so it is neither shunned nor preferred.
    /// </summary>
    public double EstimateMs(string peer) => Get(peer).EstimateMs;

    /// <summary>All that is known of <paramref name="peer"/>, read at once.</summary>
    public PeerEstimate Get(string peer)
    {
        ArgumentException.ThrowIfNullOrEmpty(peer);
        lock (_lock)
        {
            _peers.TryGetValue(peer, out var state);
            var estimate = state?.RoundTripMs ?? UnmeasuredEstimateMs();
            return new PeerEstimate(estimate, state?.QueueDepth ?? 0, state?.FailedAt);
        }
    }

    private double UnmeasuredEstimateMs()
    {
        var measured = _peers.Values.Where(p => p.RoundTripMs is not null).Select(p => p.RoundTripMs!.Value).ToList();
        return measured.Count == 0 ? UnmeasuredMs : measured.Average();
    }

    private PeerState StateOf(string peer)
    {
        if (!_peers.TryGetValue(peer, out var state))
        {
            state = new PeerState();
            _peers.Add(peer, state);
        }

        return state;
    }

    private sealed class PeerState
    {
        public double? RoundTripMs { get; set; }

        public int QueueDepth { get; set; }

        public long? FailedAt { get; set; }
    }
}

/// <summary>One peer as <see cref="PeerEstimates"/> knows it.</summary>
/// <param name="EstimateMs">Averaged round trip of an expert batch, in milliseconds.</param>
/// <param name="QueueDepth">Expert batches the peer last said it was serving besides ours.</param>
/// <param name="FailedAt">Set while the peer is avoided: the order of its failure among all failures (smaller is longer ago).</param>
public readonly record struct PeerEstimate(double EstimateMs, int QueueDepth, long? FailedAt)
{
    public bool Avoided => FailedAt is not null;
}
