namespace DanceMoE.Contracts;

/// <summary>
/// Request from an origin edge to a peer's <c>edge-{id}-experts</c> queue: run several experts of one layer on their
/// token rows. <see cref="Hidden"/> holds little-endian float32 rows of <see cref="HiddenSize"/>: each token the batch
/// needs once, which the slices' <see cref="ExpertSlice.TokenRows"/> index (or, from senders that predate them, the rows of
/// every slice in slice order). Answered with <see cref="ExpertBatchResult"/>: one output row per (slice, row), except
/// that each token of <see cref="SumRows"/> gets one row, the weighted sum of its experts' outputs.
/// </summary>
public record RunExpertBatch
{
    /// <summary>Id of this batch, echoed in its result.</summary>
    public Guid BatchId { get; init; }

    /// <summary>Id of the generation request (from NewId); echoed in the answer and the traces.</summary>
    public Guid RequestId { get; init; }

    /// <summary>The edge whose request needs the experts.</summary>
    public required string OriginEdgeId { get; init; }

    /// <summary>Zero-based MoE layer.</summary>
    public int Layer { get; init; }

    /// <summary>Width of one token row.</summary>
    public int HiddenSize { get; init; }

    /// <summary>The experts of the batch and their token rows, in result order.</summary>
    public IReadOnlyList<ExpertSlice> Slices { get; init; } = [];

    /// <summary>Little-endian float32 token rows [tokens, <see cref="HiddenSize"/>].</summary>
    public byte[] Hidden { get; init; } = [];

    /// <summary>
    /// Token rows (ascending) whose experts are all in this batch: the answer carries, for each, Σ weight · output over
    /// the slices that list it, added in slice order (experts ascending) from zero, instead of a row per slice. Needs
    /// every slice's <see cref="ExpertSlice.TokenRows"/> and <see cref="ExpertSlice.Weights"/>. Empty: no sums.
    /// </summary>
    public IReadOnlyList<int> SumRows { get; init; } = [];
}
