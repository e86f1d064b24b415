using System.Diagnostics;

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

    public void Dispose() => Ambient.Value = _previous;
}
