namespace DanceMoE.Inference;

/// <summary>One sequence's part of a forward step: the tokens after those in its cache, for the request of its context.</summary>
public sealed record SequenceChunk(IReadOnlyList<int> Tokens, KvState State, ForwardContext Context);

/// <summary>What a step gave one sequence: its logits [tokens, vocab], or why it failed (the other sequences go on).</summary>
public sealed record ChunkResult(float[]? Logits, Exception? Error);
