namespace DanceMoE.Inference;

/// <summary>
/// One request's state through the forward loop, passed to every step and dispatch: its id, the placement it arrived
/// under, what its experts cost (counted by the dispatcher) and, when <see cref="RecordsRouting"/>, every completed
/// layer's routing decisions with the server that ran each expert.
/// </summary>
public sealed class ForwardContext(Guid requestId = default, bool recordRouting = false)
{
    private readonly List<RoutedLayer> _routed = [];
    private long _localCalls;
    private long _remoteCalls;
    private long _remoteBatches;
    private long _remoteBytes;
    private long _remoteBatchShareMillis;
    private int _retries;

    public Guid RequestId { get; } = requestId;

    public bool RecordsRouting { get; } = recordRouting;

    /// <summary>The placement version the request arrived under (what its answer and summary report); 0 without placements.</summary>
    public int PlacementVersion { get; init; }

    /// <summary>Recorded routing that replaces the router's choice (<c>bench replay</c> only); null: the router decides.</summary>
    public ReplayRouting? Replay { get; init; }

    public long LocalExpertCalls => Interlocked.Read(ref _localCalls);

    public long RemoteExpertCalls => Interlocked.Read(ref _remoteCalls);

    public long RemoteBatches => Interlocked.Read(ref _remoteBatches);

    public long RemoteBytes => Interlocked.Read(ref _remoteBytes);

    /// <summary>
    /// The request's share of the remote batch messages it rode in, by its rows in each (a message shared by several
    /// requests counts once over all of them): what batching saves shows here.
    /// </summary>
    public double RemoteBatchShare => Interlocked.Read(ref _remoteBatchShareMillis) / 1000.0;

    public int Retries => Volatile.Read(ref _retries);

    /// <summary>The layers completed so far, in the order they completed (empty unless <see cref="RecordsRouting"/>).</summary>
    public IReadOnlyList<RoutedLayer> RoutedLayers
    {
        get
        {
            lock (_routed)
            {
                return [.. _routed];
            }
        }
    }

    /// <summary>Every routing decision so far, in the order the layers completed.</summary>
    public IReadOnlyList<RoutingDecision> Decisions => [.. RoutedLayers.SelectMany(l => l.Decisions)];

    // Remote batches of one layer complete on different threads: the counters are atomic.
    public void AddLocal(int experts) => Interlocked.Add(ref _localCalls, experts);

    /// <summary>A remote batch message carried <paramref name="experts"/> of this request's expert calls and <paramref name="share"/> (0 to 1) of its rows.</summary>
    public void AddRemote(int experts, long bytes, double share = 1)
    {
        Interlocked.Add(ref _remoteCalls, experts);
        Interlocked.Increment(ref _remoteBatches);
        Interlocked.Add(ref _remoteBytes, bytes);
        Interlocked.Add(ref _remoteBatchShareMillis, (long)Math.Round(share * 1000));
    }

    public void AddRetry() => Interlocked.Increment(ref _retries);

    /// <summary>Adds a completed layer; the forward loop calls it only when <see cref="RecordsRouting"/>.</summary>
    public void Record(RoutedLayer layer)
    {
        ArgumentNullException.ThrowIfNull(layer);
        lock (_routed)
        {
            _routed.Add(layer);
        }
    }
}
