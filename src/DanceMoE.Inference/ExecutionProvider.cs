namespace DanceMoE.Inference;

public enum ExecutionProvider
{
    Auto,
    Cuda,
    Cpu,
}
