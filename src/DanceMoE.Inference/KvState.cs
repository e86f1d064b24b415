using Microsoft.ML.OnnxRuntime;

namespace DanceMoE.Inference;

/// <summary>
/// The KV cache of one sequence: per routed layer, keys [capacity, heads, key dim] and values [capacity, heads, value dim]
/// (heads: the cache heads of every decoder layer its dense subgraph runs), allocated once for the sequence's longest
/// length where the sessions compute (see <see cref="KvCacheStorage"/>); each forward step appends its rows in place
/// after the first <see cref="Length"/>. Dispose it when the sequence leaves; a forgotten one is freed by the finalizer.
/// </summary>
public sealed class KvState : IDisposable
{
    private readonly KvBuffer[] _keys;
    private readonly KvBuffer[] _values;
    private readonly int[] _heads;
    private readonly int _keyHeadDim;
    private readonly int _valueHeadDim;

    internal KvState(KvCacheMemory memory, IReadOnlyList<int> heads, int keyHeadDim, int valueHeadDim, int capacity)
    {
        _heads = [.. heads];
        _keyHeadDim = keyHeadDim;
        _valueHeadDim = valueHeadDim;
        Capacity = capacity;
        _keys = new KvBuffer[_heads.Length];
        _values = new KvBuffer[_heads.Length];
        try
        {
            for (var l = 0; l < _heads.Length; l++)
            {
                _keys[l] = memory.Allocate(capacity * _heads[l] * keyHeadDim);
                _values[l] = memory.Allocate(capacity * _heads[l] * valueHeadDim);
            }
        }
        catch (Exception ex) when (ex is OnnxRuntimeException or OutOfMemoryException or OverflowException)
        {
            Dispose();
            throw;
        }
    }

    ~KvState() => Free();

    /// <summary>The most positions this cache holds.</summary>
    public int Capacity { get; }

    public int Length { get; internal set; }

    public void Dispose()
    {
        Free();
        GC.SuppressFinalize(this);
    }

    /// <summary>Keys of <paramref name="layer"/> at positions [<paramref name="from"/>, from + <paramref name="positions"/>), in place.</summary>
    internal OrtValue Keys(int layer, int from, int positions) =>
        _keys[layer].View(from * _heads[layer] * _keyHeadDim, [positions, _heads[layer], _keyHeadDim]);

    internal OrtValue Values(int layer, int from, int positions) =>
        _values[layer].View(from * _heads[layer] * _valueHeadDim, [positions, _heads[layer], _valueHeadDim]);

    private void Free()
    {
        foreach (var buffer in _keys.Concat(_values))
        {
            buffer?.Free();
        }
    }
}
