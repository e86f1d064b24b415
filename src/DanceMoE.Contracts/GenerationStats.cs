namespace DanceMoE.Contracts;

/// <summary>Where a request's expert work ran and what it cost.</summary>
public record GenerationStats
{
    /// <summary>Tokens in the prompt.</summary>
    public int PromptTokens { get; init; }

    /// <summary>Expert executions on the origin edge (one per expert per layer per forward step).</summary>
    public long LocalExpertCalls { get; init; }

    /// <summary>Expert executions sent to other edges (one per expert per layer per forward step).</summary>
    public long RemoteExpertCalls { get; init; }

    /// <summary>Batch messages to other edges that carried this request's rows (one per remote edge per layer per step).</summary>
    public long RemoteBatches { get; init; }

    /// <summary>This request's share of those messages by its rows in each: a message shared by several requests counts once over all of them.</summary>
    public double RemoteBatchShare { get; init; }

    /// <summary>Tensor bytes sent to and received from other edges.</summary>
    public long RemoteBytes { get; init; }

    /// <summary>Batches retried on another replica after a timeout or a fault.</summary>
    public int Retries { get; init; }

    /// <summary>Time from the edge receiving the request to the answer, in milliseconds.</summary>
    public double LatencyMs { get; init; }

    /// <summary>Time from the edge receiving the request to its first generated token, in milliseconds (0 when none was generated).</summary>
    public double TtftMs { get; init; }

    /// <summary>Generated tokens per second, prefill included.</summary>
    public double TokensPerSecond { get; init; }

    /// <summary>Version of the placement the edge routed by.</summary>
    public int PlacementVersion { get; init; }
}
