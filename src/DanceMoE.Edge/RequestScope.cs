using System.Diagnostics;
using DanceMoE.Traces;

namespace DanceMoE.Edge;

/// <summary>
/// The counters of the request whose forward loop is running on this async flow. The forward loop is
/// shared by all requests of an edge, so the dispatcher finds the request's counters here.
/// </summary>
public sealed class RequestScope : IDisposable
{
    private static readonly AsyncLocal<RequestScope?> Ambient = new();
    private readonly RequestScope? _previous;
    private long _localCalls;
    private long _remoteCalls;
    private long _remoteBatches;
    private long _remoteBytes;
    private int _retries;
    private readonly List<Inference.RoutingRecord> _pendingRouting = [];

    private RequestScope(Guid requestId)
    {
        RequestId = requestId;
        _previous = Ambient.Value;
        Ambient.Value = this;
    }

    public static RequestScope? Current => Ambient.Value;

    public Guid RequestId { get; }

    public Stopwatch Clock { get; } = Stopwatch.StartNew();

    public long LocalExpertCalls => Interlocked.Read(ref _localCalls);

    public long RemoteExpertCalls => Interlocked.Read(ref _remoteCalls);

    public long RemoteBatches => Interlocked.Read(ref _remoteBatches);

    public long RemoteBytes => Interlocked.Read(ref _remoteBytes);

    public int Retries => Volatile.Read(ref _retries);

    public static RequestScope Begin(Guid requestId) => new(requestId);

    public void AddLocal(int experts) => Interlocked.Add(ref _localCalls, experts);

    public void AddRemote(int experts, long bytes)
    {
        Interlocked.Add(ref _remoteCalls, experts);
        Interlocked.Increment(ref _remoteBatches);
        Interlocked.Add(ref _remoteBytes, bytes);
    }

    public void AddRetry() => Interlocked.Increment(ref _retries);

    /// <summary>A routing decision of the forward loop, held until the layer's experts have run somewhere.</summary>
    public void Route(Inference.RoutingRecord record)
    {
        lock (_pendingRouting)
        {
            _pendingRouting.Add(record);
        }
    }

    /// <summary>Writes the layer's routing decisions with the edge that served each expert.</summary>
    public void CompleteLayer(int layer, IReadOnlyDictionary<int, string> servedBy, int placementVersion, ITraceWriter traces)
    {
        ArgumentNullException.ThrowIfNull(servedBy);
        ArgumentNullException.ThrowIfNull(traces);
        List<Inference.RoutingRecord> done;
        lock (_pendingRouting)
        {
            done = _pendingRouting.Where(r => r.Layer == layer).ToList();
            _pendingRouting.RemoveAll(r => r.Layer == layer);
        }

        var now = DateTimeOffset.UtcNow;
        foreach (var record in done)
        {
            traces.Add(new Traces.RoutingRecord
            {
                RequestId = RequestId,
                Position = record.Position,
                Layer = record.Layer,
                Experts = [.. record.Choices.Select(c => c.Expert)],
                GateWeights = [.. record.Choices.Select(c => c.Weight)],
                ServedBy = [.. record.Choices.Select(c => servedBy[c.Expert])],
                PlacementVersion = placementVersion,
                RecordedAt = now,
            });
        }
    }

    public void Dispose() => Ambient.Value = _previous;
}
