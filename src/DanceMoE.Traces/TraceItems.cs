namespace DanceMoE.Traces;

/// <summary>A validated, copied record waiting to be written; immutable so that replays write the same bytes.</summary>
internal abstract class TraceItem
{
    /// <summary><see cref="Environment.TickCount64"/> when it was added, for the lag.</summary>
    public long AddedAtMs { get; init; } = Environment.TickCount64;

    /// <summary>Its place in the journal, set once as it enters the memory queue (in journal order).</summary>
    public long Sequence { get; set; }
}

internal sealed class RoutingRow : TraceItem
{
    public required Guid RequestId { get; init; }

    public required int Position { get; init; }

    public required short Layer { get; init; }

    public required short[] Experts { get; init; }

    public required float[] GateWeights { get; init; }

    public required string[] ServedBy { get; init; }

    public required int PlacementVersion { get; init; }

    public required bool Remote { get; init; }

    public UInt128? RequestFingerprint { get; init; }

    /// <summary>UTC, whole microseconds (what timestamptz keeps), so a replayed row has exactly the same key.</summary>
    public required DateTimeOffset RecordedAt { get; init; }
}

internal sealed class RequestRow : TraceItem
{
    public required Guid RequestId { get; init; }

    public string? WorkloadTag { get; init; }

    public required int PromptTokens { get; init; }

    public UInt128? Fingerprint { get; init; }

    public required int GeneratedTokens { get; init; }

    public required string Status { get; init; }

    public string? Error { get; init; }

    public int? PlacementVersion { get; init; }

    public required DateTimeOffset ReceivedAt { get; init; }

    public DateTimeOffset? FirstTokenAt { get; init; }

    public required DateTimeOffset CompletedAt { get; init; }

    public RequestCommunication? Communication { get; init; }
}
