namespace DanceMoE.Inference;

/// <summary>One layer of one forward step: its routing decisions, the server that ran each expert, and when it completed.</summary>
public sealed record RoutedLayer(
    int Layer,
    IReadOnlyList<RoutingDecision> Decisions,
    IReadOnlyDictionary<int, string> ServedBy,
    int PlacementVersion,
    DateTimeOffset CompletedAt);
