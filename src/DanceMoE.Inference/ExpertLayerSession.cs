using System.Globalization;
using System.Runtime.InteropServices;
using DanceMoE.Model;
using DanceMoE.Model.Onnx;
using DanceMoE.Model.Onnx.Proto;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;

namespace DanceMoE.Inference;

/// <summary>One expert's rows of a step: its input [rows, hidden] and where its output rows go.</summary>
public readonly record struct ExpertRows(int Expert, ReadOnlyMemory<float> Input, int Rows, Memory<float> Output);

/// <summary>
/// Several experts of one layer in a single session, so one Run serves a whole step instead of one Run
/// per expert. Each expert keeps its own nodes and weights, so its rows come out bit-identical to its
/// own session's. It holds its own copy of the weights.
/// <code>
///   e3.x ─► [expert 3's SwiGLU] ─► e3.y
///   e7.x ─► [expert 7's SwiGLU] ─► e7.y      (side by side, no shared nodes)
/// </code>
/// </summary>
public sealed class ExpertLayerSession : IDisposable
{
    private readonly InferenceSession _session;
    private readonly RunOptions _run = new();
    private readonly Dictionary<int, int> _slots = [];
    private readonly string[] _inputNames;
    private readonly string[] _outputNames;
    private readonly int _hidden;

    public ExpertLayerSession(ModelManifest manifest, int layer, IReadOnlyList<int> experts, SessionFactory factory)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        ArgumentNullException.ThrowIfNull(experts);
        ArgumentNullException.ThrowIfNull(factory);
        if (experts.Count == 0)
        {
            throw new ArgumentException("a layer session needs at least one expert", nameof(experts));
        }

        Layer = layer;
        _hidden = manifest.Architecture.HiddenSize;
        _inputNames = new string[experts.Count];
        _outputNames = new string[experts.Count];
        for (var i = 0; i < experts.Count; i++)
        {
            _slots.Add(experts[i], i);
            _inputNames[i] = Prefix(experts[i]) + GraphNames.ExpertX;
            _outputNames[i] = Prefix(experts[i]) + GraphNames.ExpertY;
        }

        _session = factory.Create(Merge(manifest, layer, experts).ToByteArray());
    }

    public int Layer { get; }

    public IReadOnlyCollection<int> Experts => _slots.Keys;

    /// <summary>Runs every expert named in <paramref name="work"/> (each at most once) in one call; the others run on zero rows.</summary>
    public void Run(IReadOnlyList<ExpertRows> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        var inputs = new OrtValue[_inputNames.Length];
        var outputs = new OrtValue[_inputNames.Length];
        try
        {
            foreach (var rows in work)
            {
                if (!_slots.TryGetValue(rows.Expert, out var slot))
                {
                    throw new ArgumentException($"expert {Layer}.{rows.Expert} is not in this layer session", nameof(work));
                }

                if (inputs[slot] is not null)
                {
                    throw new ArgumentException($"expert {Layer}.{rows.Expert} appears twice", nameof(work));
                }

                if (rows.Input.Length != rows.Rows * _hidden || rows.Output.Length != rows.Rows * _hidden)
                {
                    throw new ArgumentException($"expert {Layer}.{rows.Expert}: input and output must hold {rows.Rows} x {_hidden} values", nameof(work));
                }

                long[] shape = [rows.Rows, _hidden];
                inputs[slot] = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, MemoryMarshal.AsMemory(rows.Input), shape);
                outputs[slot] = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, rows.Output, shape);
            }

            for (var slot = 0; slot < inputs.Length; slot++)
            {
                long[] none = [0, _hidden];
                inputs[slot] ??= OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, Memory<float>.Empty, none);
                outputs[slot] ??= OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, Memory<float>.Empty, none);
            }

            _session.Run(_run, _inputNames, inputs, _outputNames, outputs);
        }
        finally
        {
            foreach (var value in inputs.Concat(outputs))
            {
                value?.Dispose();
            }
        }
    }

    public void Dispose()
    {
        _session.Dispose();
        _run.Dispose();
    }

    private static string Prefix(int expert) => string.Create(CultureInfo.InvariantCulture, $"e{expert}.");

    /// <summary>The experts' own graphs side by side, every name (and each one's row dimension) prefixed by its expert.</summary>
    private static ModelProto Merge(ModelManifest manifest, int layer, IReadOnlyList<int> experts)
    {
        ModelProto? merged = null;
        foreach (var expert in experts)
        {
            var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(manifest.PathOf(manifest.Expert(layer, expert).File)));
            ExternalData.Inline(model, manifest.Directory);
            var prefix = Prefix(expert);
            string Renamed(string name) => name.Length == 0 ? name : prefix + name;
            var g = model.Graph;
            foreach (var node in g.Node)
            {
                node.Name = Renamed(node.Name);
                string[] inputs = [.. node.Input.Select(Renamed)];
                string[] outputs = [.. node.Output.Select(Renamed)];
                node.Input.Clear();
                node.Input.AddRange(inputs);
                node.Output.Clear();
                node.Output.AddRange(outputs);
            }

            foreach (var tensor in g.Initializer)
            {
                tensor.Name = Renamed(tensor.Name);
            }

            // Each expert's row count is its own symbolic dimension, or ONNX Runtime plans them as one size.
            foreach (var value in g.Input.Concat(g.Output).Concat(g.ValueInfo))
            {
                value.Name = Renamed(value.Name);
                foreach (var dim in value.Type.TensorType.Shape.Dim.Where(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam))
                {
                    dim.DimParam = Renamed(dim.DimParam);
                }
            }

            if (merged is null)
            {
                merged = model;
                continue;
            }

            merged.Graph.Node.AddRange(g.Node);
            merged.Graph.Initializer.AddRange(g.Initializer);
            merged.Graph.Input.AddRange(g.Input);
            merged.Graph.Output.AddRange(g.Output);
            merged.Graph.ValueInfo.AddRange(g.ValueInfo);
        }

        return merged!;
    }
}
