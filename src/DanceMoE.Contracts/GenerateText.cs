namespace DanceMoE.Contracts;

/// <summary>
/// Request to an edge's <c>edge-{id}</c> queue: generate text for a prompt. Answered with
/// <see cref="TextGenerated"/>, or a fault whose message says what was wrong.
/// </summary>
public record GenerateText
{
    /// <summary>Id of the generation request (from NewId); echoed in the answer and the traces.</summary>
    public Guid RequestId { get; init; }

    /// <summary>The prompt as text (byte-level tokenized by the edge). Give this or <see cref="PromptTokenIds"/>.</summary>
    public string? Prompt { get; init; }

    /// <summary>The prompt as token ids, instead of <see cref="Prompt"/>.</summary>
    public IReadOnlyList<int>? PromptTokenIds { get; init; }

    /// <summary>How many tokens to generate at most (the edge checks its own limit).</summary>
    public int MaxNewTokens { get; init; } = 32;

    /// <summary>0 (the default) decodes greedily.</summary>
    public double Temperature { get; init; }

    /// <summary>Nucleus sampling threshold, used when <see cref="Temperature"/> is above 0.</summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>Seed of the sampler, so a sampled answer can be reproduced.</summary>
    public int Seed { get; init; }

    /// <summary>Free-text label of the workload (application, language, region), recorded with the traces.</summary>
    public string? WorkloadTag { get; init; }

    /// <summary>
    /// Benchmark replay only (<c>bench replay</c>): the id of a recorded request whose routing the edge uses instead of its
    /// router's, decoding <see cref="MaxNewTokens"/> tokens whatever they are. Refused by an edge not started with a replay trace.
    /// </summary>
    public int? ReplayRequest { get; init; }
}
