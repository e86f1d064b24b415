using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace DanceMoE.Model;

public enum TensorDtype
{
    F32,
    F16,
    BF16,
}

public sealed record TensorInfo(string Name, TensorDtype Dtype, long[] Shape, long Begin, long End)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>One `.safetensors` file: an 8-byte little-endian header length, a JSON header, then the raw data.</summary>
public sealed class SafeTensorsFile
{
    private const ulong MaxHeaderBytes = 100UL * 1024 * 1024;
    private readonly Dictionary<string, TensorInfo> _tensors;
    private readonly long _dataStart;

    private SafeTensorsFile(string path, Dictionary<string, TensorInfo> tensors, long dataStart)
    {
        Path = path;
        _tensors = tensors;
        _dataStart = dataStart;
    }

    public string Path { get; }

    public IReadOnlyDictionary<string, TensorInfo> Tensors => _tensors;

    public static SafeTensorsFile Open(string path)
    {
        if (!ModelFiles.RegularFileExists(path))
        {
            throw new ModelFormatException($"{path}: file not found");
        }

        using var handle = ModelFiles.Open(path);
        var length = RandomAccess.GetLength(handle);
        if (length < 8)
        {
            throw new ModelFormatException($"{path}: truncated safetensors file ({length} bytes, no header)");
        }

        var lengthBytes = new byte[8];
        RandomAccess.Read(handle, lengthBytes, 0);
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength == 0 || headerLength > MaxHeaderBytes || 8 + (long)headerLength > length)
        {
            throw new ModelFormatException($"{path}: truncated or corrupt safetensors header (header length {headerLength}, file {length} bytes)");
        }

        var header = new byte[headerLength];
        RandomAccess.Read(handle, header, 8);
        JsonObject root;
        try
        {
            root = ModelFiles.ParseJson(header) as JsonObject ?? throw new ModelFormatException($"{path}: safetensors header is not a JSON object");
        }
        catch (JsonException ex)
        {
            throw new ModelFormatException($"{path}: safetensors header is not valid JSON ({ex.Message})", ex);
        }

        var dataStart = 8 + (long)headerLength;
        var dataLength = length - dataStart;
        var tensors = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        foreach (var (name, node) in root)
        {
            if (name == "__metadata__")
            {
                continue;
            }

            var info = ParseEntry(path, name, node);
            if (info.End > dataLength)
            {
                throw new ModelFormatException(
                    $"{path}: truncated: tensor '{name}' needs data bytes {info.Begin}..{info.End} but the file holds {dataLength}");
            }

            tensors.Add(name, info);
        }

        // Two tensors over the same bytes would read each other's weights: a header that lies about its offsets.
        TensorInfo? previous = null;
        foreach (var info in tensors.Values.Where(t => t.End > t.Begin).OrderBy(t => t.Begin))
        {
            if (previous is not null && info.Begin < previous.End)
            {
                throw new ModelFormatException(string.Create(CultureInfo.InvariantCulture,
                    $"{path}: tensor '{info.Name}' (data bytes {info.Begin}..{info.End}) overlaps tensor '{previous.Name}' ({previous.Begin}..{previous.End})"));
            }

            previous = info;
        }

        return new SafeTensorsFile(path, tensors, dataStart);
    }

    public float[] ReadFloats(string name)
    {
        if (!_tensors.TryGetValue(name, out var info))
        {
            throw new ModelFormatException($"{Path}: tensor '{name}' not found");
        }

        var bytes = new byte[info.End - info.Begin];
        using (var handle = ModelFiles.Open(Path))
        {
            var read = 0;
            while (read < bytes.Length)
            {
                var n = RandomAccess.Read(handle, bytes.AsSpan(read), _dataStart + info.Begin + read);
                if (n == 0)
                {
                    throw new ModelFormatException($"{Path}: truncated while reading tensor '{name}'");
                }

                read += n;
            }
        }

        var values = Decode(bytes, info.Dtype);
        // One infinite weight makes every logit it reaches infinite, and the argmax of those is token 0: output that looks valid.
        for (var i = 0; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i]))
            {
                throw new ModelFormatException(string.Create(CultureInfo.InvariantCulture,
                    $"{Path}: tensor '{name}' holds {values[i]} at element {i}: its weights are damaged"));
            }
        }

        return values;
    }

    public static float[] Decode(ReadOnlySpan<byte> bytes, TensorDtype dtype)
    {
        var size = ElementSize(dtype);
        var result = new float[bytes.Length / size];
        for (var i = 0; i < result.Length; i++)
        {
            var s = bytes.Slice(i * size, size);
            result[i] = dtype switch
            {
                TensorDtype.F32 => BinaryPrimitives.ReadSingleLittleEndian(s),
                TensorDtype.F16 => (float)BinaryPrimitives.ReadHalfLittleEndian(s),
                _ => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(s) << 16),
            };
        }

        return result;
    }

    public static byte[] Encode(ReadOnlySpan<float> values, TensorDtype dtype)
    {
        var size = ElementSize(dtype);
        var bytes = new byte[values.Length * size];
        for (var i = 0; i < values.Length; i++)
        {
            var s = bytes.AsSpan(i * size, size);
            switch (dtype)
            {
                case TensorDtype.F32:
                    BinaryPrimitives.WriteSingleLittleEndian(s, values[i]);
                    break;
                case TensorDtype.F16:
                    BinaryPrimitives.WriteHalfLittleEndian(s, (Half)values[i]);
                    break;
                default:
                    BinaryPrimitives.WriteUInt16LittleEndian(s, ToBFloat16(values[i]));
                    break;
            }
        }

        return bytes;
    }

    public static int ElementSize(TensorDtype dtype) => dtype == TensorDtype.F32 ? 4 : 2;

    public static string DtypeName(TensorDtype dtype) => dtype switch
    {
        TensorDtype.F32 => "F32",
        TensorDtype.F16 => "F16",
        _ => "BF16",
    };

    /// <summary>Writes tensors in the given order; the same input gives the same bytes.</summary>
    public static void Write(string path, IReadOnlyList<(string Name, TensorDtype Dtype, long[] Shape, byte[] Data)> tensors)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var header = new JsonObject { ["__metadata__"] = new JsonObject { ["format"] = "pt" } };
        long offset = 0;
        foreach (var (name, dtype, shape, data) in tensors)
        {
            header[name] = new JsonObject
            {
                ["dtype"] = DtypeName(dtype),
                ["shape"] = new JsonArray(shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + data.Length),
            };
            offset += data.Length;
        }

        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        var padded = (json.Length + 7) / 8 * 8;
        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write);
        Span<byte> lengthBytes = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(lengthBytes, padded);
        stream.Write(lengthBytes);
        stream.Write(json);
        for (var i = json.Length; i < padded; i++)
        {
            stream.WriteByte((byte)' ');
        }

        foreach (var tensor in tensors)
        {
            stream.Write(tensor.Data);
        }
    }

    private static ushort ToBFloat16(float value)
    {
        var bits = (uint)BitConverter.SingleToInt32Bits(value);
        if (float.IsNaN(value))
        {
            return 0x7FC0;
        }

        var rounding = 0x7FFFu + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }

    private static TensorInfo ParseEntry(string path, string name, JsonNode? node)
    {
        try
        {
            var entry = node as JsonObject ?? throw new FormatException("entry is not an object");
            var dtypeName = entry["dtype"]?.GetValue<string>() ?? throw new FormatException("no dtype");
            var dtype = dtypeName switch
            {
                "F32" => TensorDtype.F32,
                "F16" => TensorDtype.F16,
                "BF16" => TensorDtype.BF16,
                _ => throw new ModelFormatException($"{path}: tensor '{name}' has unsupported dtype {dtypeName} (supported: F32, F16, BF16)"),
            };
            var shape = (entry["shape"] as JsonArray ?? throw new FormatException("no shape")).Select(d => d!.GetValue<long>()).ToArray();
            var offsets = entry["data_offsets"] as JsonArray ?? throw new FormatException("no data_offsets");
            if (offsets.Count != 2)
            {
                throw new FormatException("data_offsets must have two numbers");
            }

            var info = new TensorInfo(name, dtype, shape, offsets[0]!.GetValue<long>(), offsets[1]!.GetValue<long>());
            if (shape.Any(d => d < 0) || info.Begin < 0 || info.End < info.Begin)
            {
                throw new FormatException("negative shape or offsets");
            }

            if (info.End - info.Begin != info.ElementCount * ElementSize(dtype))
            {
                throw new FormatException(string.Create(CultureInfo.InvariantCulture,
                    $"{info.End - info.Begin} data bytes do not match shape [{string.Join(", ", shape)}] of {dtypeName}"));
            }

            return info;
        }
        catch (Exception ex) when (ex is FormatException or InvalidOperationException or JsonException)
        {
            throw new ModelFormatException($"{path}: bad header entry for tensor '{name}': {ex.Message}", ex);
        }
    }
}
