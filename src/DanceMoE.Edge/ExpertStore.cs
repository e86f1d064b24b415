using System.Diagnostics;
using DanceMoE.Inference;
using DanceMoE.Model;
using Microsoft.Extensions.Options;

namespace DanceMoE.Edge;

/// <summary>
/// The experts this edge holds, within its memory budget (weight bytes from the manifest).
/// Unlike the monolithic pool, it never loads an expert on use: what it does not hold, it refuses.
/// </summary>
public sealed class ExpertStore(ExpertSessionPool pool, long budgetBytes) : IDisposable
{
    private readonly object _gate = new();

    // Runs share the lock; an unload waits for the runs in flight, so it never races a run into reloading the expert.
    private readonly ReaderWriterLockSlim _residency = new();
    private double _expertMsEwma;
    private long _reservedBytes;

    /// <summary>An edge's store: the budget of its options, holding the experts its bootstrap placement gives it (or refusing them all).</summary>
    public ExpertStore(EdgeModel model, IOptions<EdgeOptions> options)
        : this(new ExpertSessionPool(model.Manifest, model.Sessions), options.Value.MemoryBudgetBytes)
    {
        var id = options.Value.Id;
        LoadAll([.. model.Placement.ExpertsOf(id)], id);
    }

    public ModelManifest Manifest => pool.Manifest;

    public long BudgetBytes { get; } = budgetBytes;

    public long UsedBytes => pool.LoadedBytes;

    /// <summary>Exponentially weighted mean time of one expert call here, in milliseconds.</summary>
    public double ExpertMilliseconds
    {
        get
        {
            lock (_gate)
            {
                return _expertMsEwma;
            }
        }
    }

    public bool Holds(int layer, int expert) => pool.IsLoaded(layer, expert);

    public IReadOnlyList<(int Layer, int Expert)> Loaded() =>
        [.. Manifest.Experts.Where(e => pool.IsLoaded(e.Layer, e.Expert)).Select(e => (e.Layer, e.Expert))];

    public IReadOnlyList<string> LoadedKeys() =>
        [.. Manifest.Experts.Where(e => pool.IsLoaded(e.Layer, e.Expert)).Select(e => $"{e.Layer}:{e.Expert}")];

    public long BytesOf(int layer, int expert) => Manifest.Expert(layer, expert).WeightBytes;

    /// <summary>Loads every expert in the list, refusing the whole list when it exceeds the budget.</summary>
    public void LoadAll(IReadOnlyCollection<(int Layer, int Expert)> experts, string edgeId)
    {
        ArgumentNullException.ThrowIfNull(experts);
        var needed = experts.Sum(e => BytesOf(e.Layer, e.Expert));
        if (needed > BudgetBytes)
        {
            throw new ExpertBudgetException(
                $"{edgeId}: the placement gives it {experts.Count} experts of {needed / 1048576.0:F1} MiB, over its budget of {BudgetBytes / 1048576.0:F1} MiB");
        }

        foreach (var (layer, expert) in experts)
        {
            Load(layer, expert);
        }
    }

    public void Load(int layer, int expert)
    {
        CheckRange(layer, expert);
        lock (_gate)
        {
            if (pool.IsLoaded(layer, expert))
            {
                return;
            }

            CheckRoom(layer, expert);
            pool.Load(layer, expert);
        }
    }

    /// <summary>
    /// Sets aside the expert's bytes before its weights arrive, so a load that cannot fit fails before the transfer and
    /// nothing else takes the room meanwhile. <see cref="Reservation.Load"/> turns it into the loaded expert; disposing
    /// a reservation that was not loaded frees the room.
    /// </summary>
    public Reservation Reserve(int layer, int expert)
    {
        CheckRange(layer, expert);
        lock (_gate)
        {
            if (pool.IsLoaded(layer, expert))
            {
                return new Reservation(this, layer, expert, 0);
            }

            CheckRoom(layer, expert);
            var bytes = BytesOf(layer, expert);
            _reservedBytes += bytes;
            return new Reservation(this, layer, expert, bytes);
        }
    }

    private void LoadReserved(int layer, int expert, long reservedBytes)
    {
        lock (_gate)
        {
            _reservedBytes -= reservedBytes;
            if (!pool.IsLoaded(layer, expert))
            {
                CheckRoom(layer, expert);
                pool.Load(layer, expert);
            }
        }
    }

    private void Release(long reservedBytes)
    {
        lock (_gate)
        {
            _reservedBytes -= reservedBytes;
        }
    }

    private void CheckRoom(int layer, int expert)
    {
        var after = UsedBytes + _reservedBytes + BytesOf(layer, expert);
        if (after > BudgetBytes)
        {
            throw new ExpertBudgetException(
                $"loading expert {layer}.{expert} would use {after / 1048576.0:F1} MiB (reservations included), over the budget of {BudgetBytes / 1048576.0:F1} MiB");
        }
    }

    /// <summary>Room set aside for one expert until it is loaded or given up.</summary>
    public sealed class Reservation(ExpertStore store, int layer, int expert, long bytes) : IDisposable
    {
        private long _bytes = bytes;

        public void Load()
        {
            var bytes = _bytes;
            _bytes = 0;
            store.LoadReserved(layer, expert, bytes);
        }

        public void Dispose()
        {
            store.Release(_bytes);
            _bytes = 0;
        }
    }

    public bool Unload(int layer, int expert)
    {
        CheckRange(layer, expert);
        _residency.EnterWriteLock();
        try
        {
            lock (_gate)
            {
                return pool.Unload(layer, expert);
            }
        }
        finally
        {
            _residency.ExitWriteLock();
        }
    }

    /// <summary>Runs a held expert on its rows; throws <see cref="ExpertNotHeldException"/> for any other.</summary>
    public float[] Run(int layer, int expert, float[] input, int rows)
    {
        CheckRange(layer, expert);
        float[] output;
        var started = Stopwatch.GetTimestamp();
        _residency.EnterReadLock();
        try
        {
            if (!pool.IsLoaded(layer, expert))
            {
                throw new ExpertNotHeldException($"expert {layer}.{expert} is not held here");
            }

            output = pool.Run(layer, expert, input, rows);
        }
        finally
        {
            _residency.ExitReadLock();
        }

        var ms = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
        lock (_gate)
        {
            _expertMsEwma = _expertMsEwma == 0 ? ms : (0.9 * _expertMsEwma) + (0.1 * ms);
        }

        return output;
    }

    public void CheckRange(int layer, int expert)
    {
        var layers = Manifest.Layers.Count;
        if (layer < 0 || layer >= layers)
        {
            throw new ArgumentOutOfRangeException(nameof(layer), $"layer {layer} is outside the model's {layers} layers");
        }

        var experts = Manifest.Layers[layer].Experts.Count;
        if (expert < 0 || expert >= experts)
        {
            throw new ArgumentOutOfRangeException(nameof(expert), $"expert {expert} is outside layer {layer}'s {experts} experts");
        }
    }

    public void Dispose()
    {
        pool.Dispose();
        _residency.Dispose();
    }
}

public sealed class ExpertBudgetException(string message) : Exception(message);

public sealed class ExpertNotHeldException(string message) : Exception(message);
