namespace DanceMoE.Contracts;

/// <summary>Response to <see cref="RunExpertBatch"/>: the experts' outputs in the same slice order and layout.</summary>
public record ExpertBatchResult
{
    /// <summary>Id of this batch, echoed in its result.</summary>
    public Guid BatchId { get; init; }

    /// <summary>The edge that answered.</summary>
    public required string EdgeId { get; init; }

    /// <summary>Zero-based MoE layer.</summary>
    public int Layer { get; init; }

    /// <summary>The experts of the batch and their row counts, in payload order (without the request's token rows).</summary>
    public IReadOnlyList<ExpertSlice> Slices { get; init; } = [];

    /// <summary>
    /// Little-endian float32 [rows, hidden] per slice, in slice order, without the rows of the request's
    /// <see cref="RunExpertBatch.SumRows"/>; then one row per sum row, in its order.
    /// </summary>
    public byte[] Output { get; init; } = [];

    /// <summary>Time the edge spent running the experts, in milliseconds.</summary>
    public double ComputeMs { get; init; }

    /// <summary>Other expert batches the edge was serving when it answered; 0 from senders that predate it.</summary>
    public int QueueDepth { get; init; }
}
