namespace DanceMoE.Inference;

/// <summary>How ONNX Runtime sessions are created. Zero threads: the process's one shared pool (see SessionFactory).</summary>
public sealed record InferenceOptions
{
    public ExecutionProvider Provider { get; init; } = ExecutionProvider.Auto;
    public int IntraOpThreads { get; init; }
    public int InterOpThreads { get; init; }
    public int CudaDeviceId { get; init; }
    public KvCacheStorage KvCache { get; init; } = KvCacheStorage.Auto;
    public DenseGraphs DenseGraphs { get; init; } = DenseGraphs.Both;

    public static ExecutionProvider ParseProvider(string? text) => text switch
    {
        null or "auto" => ExecutionProvider.Auto,
        "cuda" => ExecutionProvider.Cuda,
        "cpu" => ExecutionProvider.Cpu,
        _ => throw new ArgumentException($"unknown provider '{text}' (auto, cuda or cpu)", nameof(text)),
    };
}
