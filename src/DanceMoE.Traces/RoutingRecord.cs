namespace DanceMoE.Traces;

/// <summary>
/// One routing decision of the origin edge: the experts one token position of one request used in one layer,
/// their gate weights and which edge served each. Becomes one row of <c>routing_events</c>.
/// </summary>
public sealed record RoutingRecord
{
    public required Guid RequestId { get; init; }

    /// <summary>Token position in the sequence, from 0.</summary>
    public required int Position { get; init; }

    /// <summary>MoE layer, from 0.</summary>
    public required int Layer { get; init; }

    /// <summary>Chosen experts (top-k), in router order; distinct.</summary>
    public required IReadOnlyList<int> Experts { get; init; }

    /// <summary>Gate weight of each expert, same order and length as <see cref="Experts"/>.</summary>
    public required IReadOnlyList<float> GateWeights { get; init; }

    /// <summary>Edge id that executed each expert, same order and length as <see cref="Experts"/>.</summary>
    public required IReadOnlyList<string> ServedBy { get; init; }

    public required int PlacementVersion { get; init; }

    /// <summary>
    /// True when an expert ran on another edge than the origin. Left null, the writer derives it from
    /// <see cref="ServedBy"/>; when given it must agree with it.
    /// </summary>
    public bool? Remote { get; init; }

    /// <summary>When the decision was made; left default, the writer stamps the time of <c>Add</c>.</summary>
    public DateTimeOffset RecordedAt { get; init; }

    /// <summary>
    /// The request's fingerprint, as its summary carries it (not stored in the row): a row whose request id is stored for
    /// a request with another fingerprint belongs to another request under the same id and is not stored.
    /// </summary>
    public UInt128? RequestFingerprint { get; init; }
}
