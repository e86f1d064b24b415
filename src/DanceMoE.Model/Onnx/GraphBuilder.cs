using DanceMoE.Model.Onnx.Proto;
using Google.Protobuf;

namespace DanceMoE.Model.Onnx;

/// <summary>Builds one ONNX graph node by node; float weights may be stored as float16 and cast back at run time.</summary>
internal sealed class GraphBuilder(string name, TensorDtype weightDtype)
{
    public const long OpsetVersion = 17;
    public const long IrVersion = 8;

    public const string MicrosoftDomain = "com.microsoft";

    private readonly GraphProto _graph = new() { Name = name };
    private int _next;
    private bool _usesMicrosoftOps;

    /// <summary>Bytes of weight initializers (what a loaded session costs, beyond the runtime's own buffers).</summary>
    public long WeightBytes { get; private set; }

    public void Input(string tensor, TensorProto.Types.DataType type, params object[] dims) => _graph.Input.Add(ValueInfo(tensor, type, dims));

    public void Output(string tensor, TensorProto.Types.DataType type, params object[] dims) => _graph.Output.Add(ValueInfo(tensor, type, dims));

    /// <summary>A weight initializer; returns the name of its float32 value.</summary>
    public string Weight(string tensor, float[] values, params long[] dims)
    {
        var proto = new TensorProto { Name = tensor };
        proto.Dims.AddRange(dims);
        var bytes = SafeTensorsFile.Encode(values, weightDtype == TensorDtype.F32 ? TensorDtype.F32 : TensorDtype.F16);
        proto.DataType = (int)(weightDtype == TensorDtype.F32 ? TensorProto.Types.DataType.Float : TensorProto.Types.DataType.Float16);
        proto.RawData = ByteString.CopyFrom(bytes);
        _graph.Initializer.Add(proto);
        WeightBytes += bytes.Length;
        return weightDtype == TensorDtype.F32
            ? tensor
            : Node("Cast", [tensor], [Attr("to", (long)TensorProto.Types.DataType.Float)]);
    }

    /// <summary>A constant float32 initializer (never cast to float16).</summary>
    public string Floats(string tensor, float[] values, params long[] dims)
    {
        var proto = new TensorProto { Name = tensor, DataType = (int)TensorProto.Types.DataType.Float };
        proto.Dims.AddRange(dims);
        proto.FloatData.AddRange(values);
        _graph.Initializer.Add(proto);
        return tensor;
    }

    private string Raw(string tensor, TensorProto.Types.DataType type, byte[] bytes, params long[] dims)
    {
        var proto = new TensorProto { Name = tensor, DataType = (int)type, RawData = ByteString.CopyFrom(bytes) };
        proto.Dims.AddRange(dims);
        _graph.Initializer.Add(proto);
        return tensor;
    }

    public string Int64s(params long[] values)
    {
        var proto = new TensorProto { Name = $"const_{_next++}", DataType = (int)TensorProto.Types.DataType.Int64 };
        proto.Dims.Add(values.Length);
        proto.Int64Data.AddRange(values);
        _graph.Initializer.Add(proto);
        return proto.Name;
    }

    public string Scalar(float value)
    {
        var proto = new TensorProto { Name = $"const_{_next++}", DataType = (int)TensorProto.Types.DataType.Float };
        proto.FloatData.Add(value);
        _graph.Initializer.Add(proto);
        return proto.Name;
    }

    /// <summary>Adds a node; returns its (first) output, named <paramref name="output"/> or generated.</summary>
    public string Node(string op, string[] inputs, AttributeProto[]? attributes = null, string? output = null)
    {
        var node = new NodeProto { OpType = op, Name = $"{op}_{_next}" };
        node.Input.AddRange(inputs);
        node.Output.Add(output ?? $"{op.ToLowerInvariant()}_{_next}");
        _next++;
        if (attributes is not null)
        {
            node.Attribute.AddRange(attributes);
        }

        _graph.Node.Add(node);
        return node.Output[0];
    }

    public string MatMul(string a, string b, string? output = null) => Node("MatMul", [a, b], null, output);

    /// <summary>A node of ONNX Runtime's <c>com.microsoft</c> operators (an empty input name leaves that optional input out).</summary>
    public string MicrosoftNode(string op, string[] inputs, AttributeProto[] attributes, string? output = null)
    {
        _usesMicrosoftOps = true;
        var result = Node(op, inputs, attributes, output);
        _graph.Node[^1].Domain = MicrosoftDomain;
        return result;
    }

    /// <summary>x · wᵀ for a quantised w [outputs, inputs], dequantised inside ONNX Runtime's MatMulNBits with float32 accumulation.</summary>
    public string MatMulNBits(string x, string tensor, QuantizedMatrix w, string? output = null)
    {
        var packed = Raw($"{tensor}_q", TensorProto.Types.DataType.Uint8, w.Packed, w.Rows, w.BlocksPerRow, w.BlockBytes);
        var scales = Raw($"{tensor}_scales", TensorProto.Types.DataType.Float, w.ScaleBytes, w.Scales.Length);
        var zeroPoints = Raw($"{tensor}_zero_points", TensorProto.Types.DataType.Uint8, w.ZeroPoints, w.ZeroPoints.Length);
        WeightBytes += w.Bytes;
        _usesMicrosoftOps = true;
        var result = Node(
            "MatMulNBits",
            [x, packed, scales, zeroPoints],
            [Attr("K", w.Columns), Attr("N", w.Rows), Attr("bits", w.Bits), Attr("block_size", w.BlockSize), Attr("accuracy_level", 1)],
            output);
        _graph.Node[^1].Domain = MicrosoftDomain;
        return result;
    }

    public string Add(string a, string b, string? output = null) => Node("Add", [a, b], null, output);

    public string Mul(string a, string b, string? output = null) => Node("Mul", [a, b], null, output);

    public string Reshape(string x, params long[] shape) => Node("Reshape", [x, Int64s(shape)]);

    public string Transpose(string x, params long[] perm) => Node("Transpose", [x], [Ints("perm", perm)]);

    public string Concat(long axis, string? output, params string[] inputs) => Node("Concat", inputs, [Attr("axis", axis)], output);

    public string Slice(string x, long start, long end, long axis) => Node("Slice", [x, Int64s(start), Int64s(end), Int64s(axis)]);

    /// <summary>x / sqrt(mean(x², last axis) + eps) · weight.</summary>
    public string RmsNorm(string x, string weight, double eps, string? output = null)
    {
        var meanSquare = Node("ReduceMean", [Mul(x, x)], [Ints("axes", -1), Attr("keepdims", 1)]);
        var rms = Node("Sqrt", [Add(meanSquare, Scalar((float)eps))]);
        return Mul(Node("Div", [x, rms]), weight, output);
    }

    public static AttributeProto Attr(string attribute, long value) =>
        new() { Name = attribute, Type = AttributeProto.Types.AttributeType.Int, I = value };

    public static AttributeProto Text(string attribute, string value) =>
        new() { Name = attribute, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(value) };

    public static AttributeProto Ints(string attribute, params long[] values)
    {
        var proto = new AttributeProto { Name = attribute, Type = AttributeProto.Types.AttributeType.Ints };
        proto.Ints.AddRange(values);
        return proto;
    }

    public ModelProto ToModel()
    {
        var model = new ModelProto
        {
            IrVersion = IrVersion,
            ProducerName = "dancemoe",
            ProducerVersion = "1",
            Graph = _graph,
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = string.Empty, Version = OpsetVersion });
        if (_usesMicrosoftOps)
        {
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = MicrosoftDomain, Version = 1 });
        }
        return model;
    }

    private static ValueInfoProto ValueInfo(string tensor, TensorProto.Types.DataType type, object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var dim in dims)
        {
            shape.Dim.Add(dim switch
            {
                string param => new TensorShapeProto.Types.Dimension { DimParam = param },
                int value => new TensorShapeProto.Types.Dimension { DimValue = value },
                long value => new TensorShapeProto.Types.Dimension { DimValue = value },
                _ => throw new ArgumentException($"dimension {dim} of {tensor} is neither a name nor a number", nameof(dims)),
            });
        }

        return new ValueInfoProto
        {
            Name = tensor,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } },
        };
    }
}
