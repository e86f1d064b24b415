using System.Text.Json;
using System.Text.Json.Nodes;

namespace DanceMoE.Model;

/// <summary>
/// A Hugging Face style checkpoint directory: `config.json`, one or several `*.safetensors`
/// (with `model.safetensors.index.json` when sharded) and a tokenizer file.
/// </summary>
public sealed class Checkpoint
{
    public const string ConfigFile = "config.json";
    public const string IndexFile = "model.safetensors.index.json";
    public const string SingleFile = "model.safetensors";

    private readonly Dictionary<string, SafeTensorsFile> _byTensor;
    private readonly string _tensorSource;

    private Checkpoint(string directory, MoeConfig config, Dictionary<string, SafeTensorsFile> byTensor, ByteTokenizer? tokenizer, string tensorSource)
    {
        Directory = directory;
        _tensorSource = tensorSource;
        Config = config;
        _byTensor = byTensor;
        Tokenizer = tokenizer;
    }

    public string Directory { get; }

    public MoeConfig Config { get; }

    /// <summary>The byte-level tokenizer when the checkpoint has one; null for other tokenizers.</summary>
    public ByteTokenizer? Tokenizer { get; }

    public static Checkpoint Open(string directory)
    {
        if (!System.IO.Directory.Exists(directory))
        {
            throw new ModelFormatException($"{directory}: checkpoint directory not found");
        }

        var config = MoeConfig.Load(System.IO.Path.Combine(directory, ConfigFile));
        var files = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        var byTensor = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        var indexPath = System.IO.Path.Combine(directory, IndexFile);
        string source;
        if (ModelFiles.RegularFileExists(indexPath))
        {
            source = indexPath;
            foreach (var (tensor, file) in ReadIndex(indexPath))
            {
                if (!files.TryGetValue(file, out var st))
                {
                    st = SafeTensorsFile.Open(System.IO.Path.Combine(directory, file));
                    files.Add(file, st);
                }

                if (!st.Tensors.ContainsKey(tensor))
                {
                    throw new ModelFormatException($"{st.Path}: tensor '{tensor}' listed in {IndexFile} is not in the file");
                }

                byTensor[tensor] = st;
            }
        }
        else
        {
            // Directories too, so that one named like a shard is refused as one rather than passed over.
            var shards = System.IO.Directory.GetFileSystemEntries(directory, "*.safetensors").Order(StringComparer.Ordinal).ToList();
            if (shards.Count == 0)
            {
                throw new ModelFormatException($"{directory}: no *.safetensors file");
            }

            source = string.Join(", ", shards);

            foreach (var path in shards)
            {
                var st = SafeTensorsFile.Open(path);
                foreach (var tensor in st.Tensors.Keys)
                {
                    byTensor[tensor] = st;
                }
            }
        }

        var tokenizer = ByteTokenizer.TryLoad(directory);
        if (tokenizer is not null)
        {
            ByteTokenizer.CheckSpecialIds(tokenizer.BosTokenId, tokenizer.EosTokenId, config.VocabSize, Path.Combine(directory, ByteTokenizer.FileName));
        }

        return new Checkpoint(directory, config, byTensor, tokenizer, source);
    }

    public bool Has(string name) => _byTensor.ContainsKey(name);

    /// <summary>Reads a tensor as float32, checking that it exists and has the expected shape.</summary>
    public float[] Read(string name, params long[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        if (!_byTensor.TryGetValue(name, out var file))
        {
            throw new ModelFormatException($"{_tensorSource}: tensor '{name}' is missing ({Config.ModelType} layout)");
        }

        var info = file.Tensors[name];
        if (!info.Shape.SequenceEqual(shape))
        {
            throw new ModelFormatException(
                $"{file.Path}: tensor '{name}' has shape [{string.Join(", ", info.Shape)}], expected [{string.Join(", ", shape)}]");
        }

        return file.ReadFloats(name);
    }

    public TensorDtype DtypeOf(string name) =>
        _byTensor.TryGetValue(name, out var file) ? file.Tensors[name].Dtype : throw new ModelFormatException($"{Directory}: tensor '{name}' is missing from the checkpoint");

    private static IEnumerable<(string Tensor, string File)> ReadIndex(string path)
    {
        JsonObject map;
        try
        {
            map = (ModelFiles.ParseJson(ModelFiles.ReadJson(path)) as JsonObject)?["weight_map"] as JsonObject
                ?? throw new ModelFormatException($"{path}: no 'weight_map' object");
        }
        catch (JsonException ex)
        {
            throw new ModelFormatException($"{path}: invalid JSON ({ex.Message})", ex);
        }

        foreach (var (tensor, node) in map)
        {
            var file = node is JsonValue v && v.TryGetValue<string>(out var s) ? s : throw new ModelFormatException($"{path}: weight_map entry '{tensor}' is not a file name");
            if (!ModelFiles.IsPlainFileName(file))
            {
                throw new ModelFormatException($"{path}: weight_map entry '{tensor}' points outside the checkpoint ('{file}')");
            }

            yield return (tensor, file);
        }
    }
}
