namespace DanceMoE.Edge;

/// <summary>What <see cref="GenerationCancellations.Cancel"/> did.</summary>
public enum CancelOutcome
{
    /// <summary>Every request of that id from that sender is cancelled.</summary>
    Cancelled,

    /// <summary>No request of that id is being served here (never was, or already finished).</summary>
    Unknown,

    /// <summary>Requests of that id are served here, but none was sent by the canceller's broker user.</summary>
    NotTheSender,
}

/// <summary>
/// The generation requests this edge serves, by request id and the broker user that sent them, so that their sender can
/// cancel them (<see cref="DanceMoE.Contracts.CancelGeneration"/>). A request without a sender (a message without
/// <c>user_id</c>) cannot be cancelled this way; its deadline still ends it.
/// </summary>
public sealed class GenerationCancellations
{
    private readonly Lock _gate = new();
    private readonly Dictionary<Guid, List<Registration>> _byRequest = [];

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

    /// <summary>Registers a request until the registration is disposed; its token is cancelled by <see cref="Cancel"/>.</summary>
    public Registration Register(Guid requestId, string? sender)
    {
        var registration = new Registration(this, requestId, sender);
        lock (_gate)
        {
            if (!_byRequest.TryGetValue(requestId, out var list))
            {
                list = [];
                _byRequest.Add(requestId, list);
            }

            list.Add(registration);
        }

        return registration;
    }

    /// <summary>Cancels every registered request <paramref name="requestId"/> that <paramref name="sender"/> sent.</summary>
    public CancelOutcome Cancel(Guid requestId, string? sender)
    {
        List<Registration> matching;
        lock (_gate)
        {
            if (!_byRequest.TryGetValue(requestId, out var list))
            {
                return CancelOutcome.Unknown;
            }

            matching = [.. list.Where(r => r.Sender is not null && string.Equals(r.Sender, sender, StringComparison.Ordinal))];
        }

        if (matching.Count == 0)
        {
            return CancelOutcome.NotTheSender;
        }

        // Outside the lock: cancelling runs the token's callbacks.
        foreach (var registration in matching)
        {
            registration.Cancel();
        }

        return CancelOutcome.Cancelled;
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
