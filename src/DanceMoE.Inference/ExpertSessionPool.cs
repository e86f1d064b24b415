using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using DanceMoE.Model;
using DanceMoE.Model.Onnx;
using Microsoft.ML.OnnxRuntime;

namespace DanceMoE.Inference;

/// <summary>
/// Expert sessions loaded and disposed one by one; memory is accounted from the manifest's weight bytes.
/// </summary>
public sealed class ExpertSessionPool(ModelManifest manifest, SessionFactory factory) : IDisposable
{
    private readonly Dictionary<(int Layer, int Expert), InferenceSession> _sessions = [];
    private readonly object _gate = new();
    private readonly RunOptions _run = new();

    public ModelManifest Manifest { get; } = manifest ?? throw new ArgumentNullException(nameof(manifest));

    public long LoadedBytes
    {
        get
        {
            lock (_gate)
            {
                return _sessions.Keys.Sum(k => Manifest.Expert(k.Layer, k.Expert).WeightBytes);
            }
        }
    }

    public int LoadedCount
    {
        get
        {
            lock (_gate)
            {
                return _sessions.Count;
            }
        }
    }

    public bool IsLoaded(int layer, int expert)
    {
        lock (_gate)
        {
            return _sessions.ContainsKey((layer, expert));
        }
    }

    public void Load(int layer, int expert) => Get(layer, expert);

    public bool Unload(int layer, int expert)
    {
        InferenceSession? session;
        lock (_gate)
        {
            if (!_sessions.Remove((layer, expert), out session))
            {
                return false;
            }
        }

        session.Dispose();
        return true;
    }

    /// <summary>Loads every expert of the manifest (the monolithic case); sessions are created in parallel.</summary>
    public void LoadAll()
    {
        var experts = Manifest.Experts.ToList();
        Load(experts[0].Layer, experts[0].Expert);
        try
        {
            Parallel.ForEach(experts.Skip(1), e => Load(e.Layer, e.Expert));
        }
        catch (AggregateException ex) when (ex.InnerExceptions.Count > 0)
        {
            ExceptionDispatchInfo.Capture(ex.InnerExceptions[0]).Throw();
        }
    }

    /// <summary>Runs one expert on `rows` token rows [rows, hidden]; loads its session if needed.</summary>
    public float[] Run(int layer, int expert, float[] input, int rows)
    {
        ArgumentNullException.ThrowIfNull(input);
        var output = new float[rows * Manifest.Architecture.HiddenSize];
        Run(layer, expert, input, rows, output);
        return output;
    }

    /// <summary>Runs one expert on `rows` token rows [rows, hidden], writing its rows into the caller's buffer (no copy).</summary>
    public void Run(int layer, int expert, ReadOnlyMemory<float> input, int rows, Memory<float> output)
    {
        var hidden = Manifest.Architecture.HiddenSize;
        if (input.Length != rows * hidden)
        {
            throw new ArgumentException($"expert input has {input.Length} values, expected {rows} x {hidden}", nameof(input));
        }

        if (output.Length != rows * hidden)
        {
            throw new ArgumentException($"expert output has room for {output.Length} values, expected {rows} x {hidden}", nameof(output));
        }

        long[] shape = [rows, hidden];
        using var x = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, MemoryMarshal.AsMemory(input), shape);
        using var y = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, output, shape);
        Get(layer, expert).Run(_run, [GraphNames.ExpertX], [x], [GraphNames.ExpertY], [y]);
    }

    public void Dispose()
    {
        lock (_gate)
        {
            foreach (var session in _sessions.Values)
            {
                session.Dispose();
            }

            _sessions.Clear();
        }

        _run.Dispose();
    }

    private InferenceSession Get(int layer, int expert)
    {
        if (layer < 0 || layer >= Manifest.Layers.Count || expert < 0 || expert >= Manifest.Layers[layer].Experts.Count)
        {
            throw new ArgumentOutOfRangeException(nameof(expert), $"no expert {layer}.{expert} in the manifest");
        }

        lock (_gate)
        {
            if (_sessions.TryGetValue((layer, expert), out var loaded))
            {
                return loaded;
            }
        }

        var session = factory.Create(Manifest.PathOf(Manifest.Expert(layer, expert).File));
        lock (_gate)
        {
            if (_sessions.TryAdd((layer, expert), session))
            {
                return session;
            }
        }

        session.Dispose();
        return Get(layer, expert);
    }
}
