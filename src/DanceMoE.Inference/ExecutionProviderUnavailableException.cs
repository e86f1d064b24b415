namespace DanceMoE.Inference;

/// <summary>The execution provider asked for explicitly (not `auto`) cannot be used on this machine.</summary>
public sealed class ExecutionProviderUnavailableException(string message, Exception inner) : Exception(message, inner);
