namespace DanceMoE.Data;

/// <summary>One inference request as its origin edge finished it (table <c>requests</c>).</summary>
public sealed class InferenceRequest
{
    public Guid Id { get; set; }

    /// <summary>Edge server where the request arrived and whose dense layers ran it.</summary>
    public required string OriginEdge { get; set; }

    public string? WorkloadTag { get; set; }

    public int PromptTokens { get; set; }

    /// <summary>16 bytes hashing what the answer depends on; equal for a retry under the same id.</summary>
    public byte[]? Fingerprint { get; set; }

    public int GeneratedTokens { get; set; }

    /// <summary><c>completed</c>, <c>failed</c> or <c>cancelled</c>.</summary>
    public required string Status { get; set; }

    public string? Error { get; set; }

    public int? PlacementVersion { get; set; }

    public DateTimeOffset ReceivedAt { get; set; }

    public DateTimeOffset? FirstTokenAt { get; set; }

    public DateTimeOffset CompletedAt { get; set; }

    /// <summary>Expert batch messages to other edges that carried its rows; null in rows from before edges stored it.</summary>
    public int? RemoteBatches { get; set; }

    /// <summary>Its share of those messages by its rows in each (a message several requests shared counts once over all).</summary>
    public double? RemoteBatchShare { get; set; }

    /// <summary>Its share of the tensor bytes sent to and received from other edges.</summary>
    public long? RemoteBytes { get; set; }

    /// <summary>Expert batches retried on another replica after a peer failed.</summary>
    public int? BatchRetries { get; set; }
}
