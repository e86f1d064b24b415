namespace DanceMoE.Contracts;

/// <summary>Response to <see cref="GenerateText"/>.</summary>
public record TextGenerated
{
    /// <summary>Id of the generation request (from NewId); echoed in the answer and the traces.</summary>
    public Guid RequestId { get; init; }

    /// <summary>The edge that ran the request (its origin).</summary>
    public required string EdgeId { get; init; }

    /// <summary>Generated token ids, prompt excluded.</summary>
    public IReadOnlyList<int> TokenIds { get; init; } = [];

    /// <summary>The generated tokens decoded as text.</summary>
    public string Text { get; init; } = "";

    /// <summary>True when generation stopped at the end-of-sequence token before the limit.</summary>
    public bool StoppedAtEos { get; init; }

    /// <summary>Where the expert work ran and what it cost.</summary>
    public required GenerationStats Stats { get; init; }
}
