namespace DanceMoE.Inference;

public sealed record GenerationResult(
    IReadOnlyList<int> PromptIds,
    IReadOnlyList<int> TokenIds,
    string Text,
    double Seconds,
    double TokensPerSecond,
    bool StoppedAtEos);
