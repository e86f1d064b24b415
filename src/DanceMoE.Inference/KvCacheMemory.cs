using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace DanceMoE.Inference;

/// <summary>
/// Allocates the caches' buffers (managed arrays, or native memory from one ONNX Runtime allocator) and counts those not
/// yet freed. A device's allocator is released once this is disposed and its last buffer freed, whichever comes last;
/// the host's default allocator is never released.
/// </summary>
internal sealed class KvCacheMemory : IDisposable
{
    private readonly OrtAllocator? _allocator;
    private readonly object _gate = new();
    private int _outstanding;
    private bool _disposed;

    private KvCacheMemory(OrtAllocator? allocator, bool onDevice)
    {
        _allocator = allocator;
        OnDevice = onDevice;
    }

    public KvCacheStorage Storage => _allocator is null ? KvCacheStorage.Managed : KvCacheStorage.Native;

    public int Outstanding => Volatile.Read(ref _outstanding);

    /// <summary>True when the buffers are in a device's memory (CUDA), not the host's.</summary>
    public bool OnDevice { get; }

    public static KvCacheMemory Managed() => new(null, false);

    /// <summary>Host memory from ONNX Runtime's default CPU allocator.</summary>
    public static KvCacheMemory Host() => new(OrtAllocator.DefaultInstance, false);

    /// <summary>Device memory from the CUDA allocator of <paramref name="session"/> (a session on the CUDA provider).</summary>
    public static KvCacheMemory Cuda(InferenceSession session, int deviceId)
    {
        using var info = new OrtMemoryInfo(OrtMemoryInfo.allocatorCUDA, OrtAllocatorType.DeviceAllocator, deviceId, OrtMemType.Default);
        return new(new OrtAllocator(session, info), true);
    }

    public KvBuffer Allocate(int floats)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var buffer = _allocator is null
                ? new KvBuffer(this, new float[floats])
                : new KvBuffer(this, OrtValue.CreateAllocatedTensorValue(_allocator, TensorElementType.Float, [floats]));
            _outstanding++;
            return buffer;
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _disposed = true;
            ReleaseWhenIdle();
        }
    }

    internal void Free(OrtValue? allocation)
    {
        lock (_gate)
        {
            allocation?.Dispose();
            _outstanding--;
            ReleaseWhenIdle();
        }
    }

    private void ReleaseWhenIdle()
    {
        if (_disposed && _outstanding == 0 && OnDevice)
        {
            _allocator!.Dispose();
        }
    }
}

/// <summary>One layer's keys or values of one sequence: a managed array or a native allocation, viewed as tensors in place.</summary>
internal sealed class KvBuffer
{
    private readonly KvCacheMemory _memory;
    private readonly float[]? _array;
    private readonly OrtValue? _native;
    private readonly OrtMemoryInfo? _info;
    private readonly nint _pointer;
    private readonly long _bytes;
    private int _freed;

    public KvBuffer(KvCacheMemory memory, float[] array)
    {
        _memory = memory;
        _array = array;
        _bytes = (long)array.Length * sizeof(float);
    }

    /// <summary>Over <paramref name="native"/>, a tensor that owns memory from an allocator (maybe on a device: only its address is taken).</summary>
    public unsafe KvBuffer(KvCacheMemory memory, OrtValue native)
    {
        _memory = memory;
        _native = native;
        _info = native.GetTensorMemoryInfo();
        _bytes = native.GetTensorSizeInBytes();
        _pointer = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(native.GetTensorMutableRawData()));

        // The collector cannot see native bytes; told of them, it finalizes a cache nobody disposed in time.
        GC.AddMemoryPressure(_bytes);
    }

    /// <summary>A tensor of <paramref name="shape"/> over the floats from <paramref name="offset"/>; it must not outlive this buffer.</summary>
    public OrtValue View(int offset, long[] shape)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _freed) != 0, this);
        var length = shape.Aggregate(1L, (a, b) => a * b);
        if (offset < 0 || (offset + length) * sizeof(float) > _bytes)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"floats {offset} to {offset + length} outside a buffer of {_bytes / sizeof(float)}");
        }

        return _array is not null
            ? OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _array.AsMemory(offset, (int)length), shape)
            : OrtValue.CreateTensorValueWithData(_info!, TensorElementType.Float, shape, _pointer + ((nint)offset * sizeof(float)), length * sizeof(float));
    }

    public void Free()
    {
        if (Interlocked.Exchange(ref _freed, 1) != 0)
        {
            return;
        }

        if (_native is not null)
        {
            GC.RemoveMemoryPressure(_bytes);
        }

        _memory.Free(_native);
    }
}
