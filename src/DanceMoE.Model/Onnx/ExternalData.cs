using System.Globalization;
using DanceMoE.Model.Onnx.Proto;
using Google.Protobuf;

namespace DanceMoE.Model.Onnx;

/// <summary>
/// ONNX external data: initializers' bytes kept in a side file next to the .onnx, each tensor naming the file
/// (relative to the model's folder), its offset and length. ONNX Runtime reads them when a session is created from
/// the model's path.
/// </summary>
public static class ExternalData
{
    /// <summary>Offsets are aligned to this, so ONNX Runtime can map tensors straight from the file.</summary>
    public const int Alignment = 4096;

    /// <summary>Moves every raw-data initializer of <paramref name="model"/> into <paramref name="dataFile"/> in <paramref name="directory"/>.</summary>
    public static ExternalDataFile Write(ModelProto model, string directory, string dataFile)
    {
        ArgumentNullException.ThrowIfNull(model);
        var path = Path.Combine(directory, dataFile);
        using (var stream = File.Create(path))
        {
            foreach (var tensor in model.Graph.Initializer.Where(t => !t.RawData.IsEmpty))
            {
                var offset = (stream.Position + Alignment - 1) / Alignment * Alignment;
                stream.SetLength(offset);
                stream.Position = offset;
                tensor.RawData.WriteTo(stream);
                tensor.ExternalData.Add(Entry("location", dataFile));
                tensor.ExternalData.Add(Entry("offset", offset.ToString(CultureInfo.InvariantCulture)));
                tensor.ExternalData.Add(Entry("length", tensor.RawData.Length.ToString(CultureInfo.InvariantCulture)));
                tensor.DataLocation = TensorProto.Types.DataLocation.External;
                tensor.RawData = ByteString.Empty;
            }
        }

        return new ExternalDataFile(dataFile, ModelManifest.Sha256Of(path), new FileInfo(path).Length);
    }

    /// <summary>Reads external initializers back into raw data (for a model that is handed to ONNX Runtime as bytes).</summary>
    public static void Inline(ModelProto model, string directory)
    {
        ArgumentNullException.ThrowIfNull(model);
        foreach (var tensor in model.Graph.Initializer.Where(t => t.DataLocation == TensorProto.Types.DataLocation.External))
        {
            var fields = tensor.ExternalData.ToDictionary(e => e.Key, e => e.Value, StringComparer.Ordinal);
            var path = Path.Combine(directory, fields["location"]);
            var offset = fields.TryGetValue("offset", out var o) ? long.Parse(o, CultureInfo.InvariantCulture) : 0;
            using var stream = new FileStream(ModelFiles.Open(path), FileAccess.Read);
            var length = fields.TryGetValue("length", out var l) ? long.Parse(l, CultureInfo.InvariantCulture) : stream.Length - offset;
            if (offset + length > stream.Length)
            {
                throw new ModelFormatException(string.Create(CultureInfo.InvariantCulture,
                    $"{path}: truncated: tensor '{tensor.Name}' needs bytes {offset}..{offset + length}, the file has {stream.Length}"));
            }

            var bytes = new byte[length];
            stream.Position = offset;
            stream.ReadExactly(bytes);
            tensor.RawData = ByteString.CopyFrom(bytes);
            tensor.ExternalData.Clear();
            tensor.DataLocation = TensorProto.Types.DataLocation.Default;
        }
    }

    private static StringStringEntryProto Entry(string key, string value) => new() { Key = key, Value = value };
}
