using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace DanceMoE.Model;

/// <summary>A tensor at a graph boundary; dimensions are numbers or symbolic names ("seq", "past").</summary>
public sealed record TensorSpec(string Name, string Dtype, IReadOnlyList<string> Shape);

public sealed record GraphSignature(IReadOnlyList<TensorSpec> Inputs, IReadOnlyList<TensorSpec> Outputs);

/// <summary>One exported file; <see cref="WeightBytes"/> is what its weights take once loaded.</summary>
public sealed record ModelFile(string File, string Sha256, long Bytes, long WeightBytes);

public sealed record ExpertFile(int Layer, int Expert, string File, string Sha256, long Bytes, long WeightBytes);

/// <summary>One routed layer: its dense subgraph, which runs <see cref="DecoderLayers"/> (dense-MLP layers, then the MoE layer), and its experts.</summary>
public sealed record LayerFiles(int Layer, ModelFile Dense, IReadOnlyList<ExpertFile> Experts)
{
    public IReadOnlyList<int>? DecoderLayers { get; init; }
}

public sealed record TokenizerInfo(string Kind, int VocabSize, int BosTokenId, int EosTokenId);

/// <summary>
/// `manifest.json` of an exported model: the only way runtime code finds and sizes the ONNX files.
/// </summary>
public sealed record ModelManifest
{
    public const string FileName = "manifest.json";
    public const string CurrentFormat = "dancemoe-onnx/2";

    public static JsonSerializerOptions JsonOptions { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public string Format { get; init; } = CurrentFormat;
    public long Opset { get; init; }
    public long IrVersion { get; init; }

    /// <summary>Storage dtype of the weights in the ONNX files ("f32" or "f16"); activations are always float32.</summary>
    public string WeightDtype { get; init; } = "f32";

    /// <summary>
    /// Storage of the routed experts' projections: "fp32", "fp16", or "int8"/"int4" quantised block-wise for ONNX
    /// Runtime's MatMulNBits with <see cref="ExpertBlockSize"/> weights per scale; absent (older exports): as
    /// <see cref="WeightDtype"/>.
    /// </summary>
    public string? ExpertWeights { get; init; }

    public int? ExpertBlockSize { get; init; }

    [JsonIgnore]
    public ExpertWeightFormat ExpertFormat => ExpertWeights is null
        ? (WeightDtype == "f32" ? ExpertWeightFormat.Fp32 : ExpertWeightFormat.Fp16)
        : ExpertQuantization.Parse(ExpertWeights);

    public required MoeConfig Architecture { get; init; }
    public TokenizerInfo? Tokenizer { get; init; }
    public required IReadOnlyDictionary<string, GraphSignature> Signatures { get; init; }
    public required ModelFile Embedding { get; init; }
    public required IReadOnlyList<LayerFiles> Layers { get; init; }
    public required ModelFile Head { get; init; }

    [JsonIgnore]
    public string Directory { get; init; } = ".";

    [JsonIgnore]
    public IEnumerable<ExpertFile> Experts => Layers.SelectMany(l => l.Experts);

    public ExpertFile Expert(int layer, int expert) => Layers[layer].Experts[expert];

    public string PathOf(string file) => System.IO.Path.Combine(Directory, file);

    public static ModelManifest Load(string directory)
    {
        var path = System.IO.Path.Combine(directory, FileName);
        if (!File.Exists(path))
        {
            throw new ModelFormatException($"{path}: file not found (is {directory} an exported model?)");
        }

        ModelManifest manifest;
        try
        {
            manifest = JsonSerializer.Deserialize<ModelManifest>(File.ReadAllText(path), JsonOptions)
                ?? throw new ModelFormatException($"{path}: empty manifest");
        }
        catch (JsonException ex)
        {
            throw new ModelFormatException($"{path}: invalid manifest ({ex.Message})", ex);
        }

        if (manifest.Format != CurrentFormat)
        {
            throw new ModelFormatException($"{path}: unsupported format '{manifest.Format}' (expected {CurrentFormat})");
        }

        var c = manifest.Architecture;
        c.Validate(path);
        try
        {
            _ = manifest.ExpertFormat;
        }
        catch (ModelFormatException ex)
        {
            throw new ModelFormatException($"{path}: {ex.Message}", ex);
        }

        if (manifest.Layers.Count != c.RoutedLayers || manifest.Layers.Any(l => l.Experts.Count != c.NumExperts))
        {
            throw new ModelFormatException($"{path}: lists {manifest.Layers.Count} layers / {manifest.Experts.Count()} experts, architecture says {c.RoutedLayers} routed layers x {c.NumExperts}");
        }

        manifest = manifest with { Directory = directory };
        foreach (var file in new[] { manifest.Embedding.File, manifest.Head.File }
            .Concat(manifest.Layers.Select(l => l.Dense.File)).Concat(manifest.Experts.Select(e => e.File)))
        {
            if (!File.Exists(manifest.PathOf(file)))
            {
                throw new ModelFormatException($"{path}: listed file {file} is missing");
            }
        }

        return manifest;
    }

    public void Save(string directory) =>
        File.WriteAllText(System.IO.Path.Combine(directory, FileName), JsonSerializer.Serialize(this, JsonOptions) + "\n");

    /// <summary>Checks every file's SHA-256 against the manifest; returns the names that differ.</summary>
    public IReadOnlyList<string> FindCorruptFiles()
    {
        var entries = new List<(string File, string Sha)> { (Embedding.File, Embedding.Sha256), (Head.File, Head.Sha256) };
        entries.AddRange(Layers.Select(l => (l.Dense.File, l.Dense.Sha256)));
        entries.AddRange(Experts.Select(e => (e.File, e.Sha256)));
        return [.. entries.Where(e => Sha256Of(PathOf(e.File)) != e.Sha).Select(e => e.File)];
    }

    public static string Sha256Of(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }
}
