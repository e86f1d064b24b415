using DanceMoE.Model;

namespace DanceMoE.Inference;

/// <summary>One routing decision: which experts a token row went to in a layer, with their gate weights.</summary>
public sealed record RoutingDecision(int Layer, int Position, IReadOnlyList<ExpertChoice> Choices);
