namespace DanceMoE.Edge;

/// <summary>What <see cref="GenerationCancellations.Cancel"/> did.</summary>
public enum CancelOutcome
{
    /// <summary>Every request of that id from that sender is cancelled.</summary>
    Cancelled,

    /// <summary>
    /// No request of that id is being served here (never was, already finished, or not arrived yet): the cancel is kept for
    /// <see cref="GenerationCancellations.EarlyCancelLifetime"/> in case its request arrives after it.
    /// </summary>
    Unknown,

    /// <summary>Requests of that id are served here, but none was sent by the canceller's broker user.</summary>
    NotTheSender,
}

/// <summary>
/// The generation requests this edge serves, by request id and the broker user that sent them, so that their sender can
/// cancel them (<see cref="DanceMoE.Contracts.CancelGeneration"/>). A request without a sender (a message without
/// <c>user_id</c>) cannot be cancelled this way; its deadline still ends it. A cancel and its request travel the same queue
/// but are consumed concurrently, so a cancel may overtake its request: it is kept a while (at most
/// <see cref="EarlyCancelLimit"/> of them, the oldest dropped first) and the request starts cancelled.
/// </summary>
public sealed class GenerationCancellations(TimeProvider time)
{
    public const int EarlyCancelLimit = 1024;

    public static readonly TimeSpan EarlyCancelLifetime = TimeSpan.FromMinutes(1);

    private readonly Lock _gate = new();
    private readonly Dictionary<Guid, List<Registration>> _byRequest = [];
    private readonly Dictionary<(Guid RequestId, string Sender), DateTimeOffset> _early = [];
    private readonly Queue<(Guid RequestId, string Sender)> _earlyOrder = new();

    public GenerationCancellations()
        : this(TimeProvider.System)
    {
    }

    /// <summary>Requests registered now.</summary>
    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _byRequest.Values.Sum(list => list.Count);
            }
        }
    }

    /// <summary>Cancels kept now for requests that have not arrived.</summary>
    public int EarlyCount
    {
        get
        {
            lock (_gate)
            {
                return _early.Count;
            }
        }
    }

    /// <summary>
    /// Registers a request until the registration is disposed; its token is cancelled by <see cref="Cancel"/>, or at once when
    /// its sender's cancel came first (<see cref="Registration.CancelledBeforeArrival"/>).
    /// </summary>
    public Registration Register(Guid requestId, string? sender)
    {
        var registration = new Registration(this, requestId, sender);
        var cancelledBefore = false;
        lock (_gate)
        {
            if (sender is not null && _early.TryGetValue((requestId, sender), out var cancelledAt))
            {
                cancelledBefore = time.GetUtcNow() - cancelledAt < EarlyCancelLifetime;
            }

            if (!_byRequest.TryGetValue(requestId, out var list))
            {
                list = [];
                _byRequest.Add(requestId, list);
            }

            list.Add(registration);
        }

        if (cancelledBefore)
        {
            registration.CancelledBeforeArrival = true;
            registration.Cancel();
        }

        return registration;
    }

    /// <summary>Cancels every registered request <paramref name="requestId"/> that <paramref name="sender"/> sent.</summary>
    public CancelOutcome Cancel(Guid requestId, string? sender)
    {
        List<Registration> matching;
        bool served;
        lock (_gate)
        {
            served = _byRequest.TryGetValue(requestId, out var list);
            matching = served ? [.. list!.Where(r => r.Sender is not null && string.Equals(r.Sender, sender, StringComparison.Ordinal))] : [];
            if (matching.Count == 0 && sender is not null)
            {
                KeepEarly(requestId, sender);
            }
        }

        if (matching.Count == 0)
        {
            return served ? CancelOutcome.NotTheSender : CancelOutcome.Unknown;
        }

        // Outside the lock: cancelling runs the token's callbacks.
        foreach (var registration in matching)
        {
            registration.Cancel();
        }

        return CancelOutcome.Cancelled;
    }

    // Under _gate. Expired cancels leave first; past the limit the oldest goes, so a flood of cancels holds bounded memory.
    private void KeepEarly(Guid requestId, string sender)
    {
        var now = time.GetUtcNow();
        while (_earlyOrder.TryPeek(out var oldest) && (_early.Count >= EarlyCancelLimit || now - _early[oldest] >= EarlyCancelLifetime))
        {
            _earlyOrder.Dequeue();
            _early.Remove(oldest);
        }

        if (_early.TryAdd((requestId, sender), now))
        {
            _earlyOrder.Enqueue((requestId, sender));
        }
    }

    private void Remove(Registration registration)
    {
        lock (_gate)
        {
            if (_byRequest.TryGetValue(registration.RequestId, out var list) && list.Remove(registration) && list.Count == 0)
            {
                _byRequest.Remove(registration.RequestId);
            }
        }
    }

    /// <summary>One served request; dispose it when the request leaves.</summary>
    public sealed class Registration : IDisposable
    {
        private readonly GenerationCancellations _owner;
        private readonly CancellationTokenSource _source = new();
        private int _disposed;

        internal Registration(GenerationCancellations owner, Guid requestId, string? sender)
        {
            _owner = owner;
            RequestId = requestId;
            Sender = sender;
            Token = _source.Token;
        }

        public Guid RequestId { get; }

        public string? Sender { get; }

        /// <summary>Cancelled when the request's sender cancels it.</summary>
        public CancellationToken Token { get; }

        /// <summary>Its sender's cancel overtook it: the request should not be served at all.</summary>
        public bool CancelledBeforeArrival { get; internal set; }

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                _owner.Remove(this);
                _source.Dispose();
            }
        }

        internal void Cancel()
        {
            try
            {
                _source.Cancel();
            }
            catch (ObjectDisposedException)
            {
                // The request left between the lookup and now: nothing to cancel.
            }
        }
    }
}
