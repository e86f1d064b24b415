namespace DanceMoE.Inference;

/// <summary>Greedy when Temperature is 0; otherwise temperature, nucleus (top-p) and a seeded draw.</summary>
public sealed record SamplingOptions
{
    public double Temperature { get; init; }
    public double TopP { get; init; } = 1.0;
    public ulong Seed { get; init; }
}
