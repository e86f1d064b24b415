namespace DanceMoE.Traces;

/// <summary>How a request ended on its origin edge. Becomes one row of <c>requests</c>.</summary>
public sealed record RequestSummary
{
    public required Guid RequestId { get; init; }

    public string? WorkloadTag { get; init; }

    public required int PromptTokens { get; init; }

    /// <summary>
    /// A hash of everything the answer depends on (prompt tokens, length, sampling, tag): a retry under the same id has the
    /// same, another request reusing the id another. Null where the sender does not compute one.
    /// </summary>
    public UInt128? Fingerprint { get; init; }

    public required int GeneratedTokens { get; init; }

    public required RequestStatus Status { get; init; }

    /// <summary>Error message of a failed request; the writer keeps the first <see cref="TraceLimits.MaxErrorLength"/> characters.</summary>
    public string? Error { get; init; }

    public int? PlacementVersion { get; init; }

    public required DateTimeOffset ReceivedAt { get; init; }

    public DateTimeOffset? FirstTokenAt { get; init; }

    public required DateTimeOffset CompletedAt { get; init; }

    /// <summary>What crossed the network for it (the answer's stats); null where the sender does not count it.</summary>
    public RequestCommunication? Communication { get; init; }
}

/// <summary>A request's expert batches to other edges: messages, its share of them by rows, its share of their tensor bytes, retries.</summary>
public sealed record RequestCommunication(int RemoteBatches, double RemoteBatchShare, long RemoteBytes, int BatchRetries);

public enum RequestStatus
{
    Completed,
    Failed,
    Cancelled,
}
