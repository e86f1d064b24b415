namespace DanceMoE.Inference;

/// <summary>
/// Where each sequence's KV cache lives: managed arrays pinned for each run (zero-copy on the CPU only), or native
/// buffers from the sessions' device allocator, viewed by pointer and bound with IOBinding so that a CUDA session reads
/// its past and writes its new rows where they are.
/// </summary>
public enum KvCacheStorage
{
    /// <summary>Native on CUDA; on the CPU the managed arrays (as fast there, measured by <c>bench expert-exec</c>, and today's path).</summary>
    Auto,

    /// <summary>Managed arrays, pinned for each run: zero-copy on the CPU, copied to a device and back on every run.</summary>
    Managed,

    /// <summary>Native buffers of the sessions' device (host memory on the CPU), bound with IOBinding.</summary>
    Native,
}
