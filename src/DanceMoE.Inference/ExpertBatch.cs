namespace DanceMoE.Inference;

/// <summary>The token rows [rows, hidden] that one expert of a layer must process.</summary>
public sealed record ExpertBatch(int Expert, int Rows, float[] Input);
