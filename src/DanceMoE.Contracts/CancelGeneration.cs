namespace DanceMoE.Contracts;

/// <summary>
/// To an edge's <c>edge-{id}</c> queue from a requester that gave up on its <see cref="GenerateText"/> before the answer:
/// the edge drops request <see cref="RequestId"/> at its next step and frees its slot. Taken only from the broker user
/// that sent the request; no answer.
/// </summary>
public record CancelGeneration
{
    /// <summary>The <see cref="GenerateText.RequestId"/> of the request to drop.</summary>
    public Guid RequestId { get; init; }
}
