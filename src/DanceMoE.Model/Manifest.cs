using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace DanceMoE.Model;

/// <summary>A tensor at a graph boundary; dimensions are numbers or symbolic names ("seq", "past").</summary>
public sealed record TensorSpec(string Name, string Dtype, IReadOnlyList<string> Shape);

public sealed record GraphSignature(IReadOnlyList<TensorSpec> Inputs, IReadOnlyList<TensorSpec> Outputs);

/// <summary>The side file holding an ONNX file's weights as ONNX external data.</summary>
public sealed record ExternalDataFile(string File, string Sha256, long Bytes);

/// <summary>One exported file; <see cref="WeightBytes"/> is what its weights take once loaded.</summary>
public sealed record ModelFile(string File, string Sha256, long Bytes, long WeightBytes)
{
    /// <summary>Where its weights are when they are kept outside the .onnx (null: inside it).</summary>
    public ExternalDataFile? ExternalData { get; init; }
}

public sealed record ExpertFile(int Layer, int Expert, string File, string Sha256, long Bytes, long WeightBytes)
{
    public ExternalDataFile? ExternalData { get; init; }
}

/// <summary>One routed layer: its dense subgraph, which runs <see cref="DecoderLayers"/> (dense-MLP layers, then the MoE layer), and its experts.</summary>
public sealed record LayerFiles(int Layer, ModelFile Dense, IReadOnlyList<ExpertFile> Experts)
{
    public IReadOnlyList<int>? DecoderLayers { get; init; }

    /// <summary>The same dense part in three graphs, so that a step runs its projections once for all its sequences (null: not exported).</summary>
    public DenseStepFiles? DenseSteps { get; init; }
}

/// <summary>A routed layer's dense part cut at its attention: projections and output row by row, attention per sequence.</summary>
public sealed record DenseStepFiles(ModelFile Projections, ModelFile Attention, ModelFile Output)
{
    public IEnumerable<ModelFile> All() => [Projections, Attention, Output];
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
        RespectNullableAnnotations = true,
        RespectRequiredConstructorParameters = true,
        // Last one wins otherwise: a hand-edited manifest would run with whichever of two values came later.
        AllowDuplicateProperties = false,
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
        if (!ModelFiles.RegularFileExists(path))
        {
            throw new ModelFormatException($"{path}: file not found (is {directory} an exported model?)");
        }

        ModelManifest manifest;
        try
        {
            manifest = JsonSerializer.Deserialize<ModelManifest>(ModelFiles.ReadJson(path), JsonOptions)
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

        if (manifest.Tokenizer is { Kind: ByteTokenizer.Kind } tokenizer)
        {
            ByteTokenizer.CheckSpecialIds(tokenizer.BosTokenId, tokenizer.EosTokenId, c.VocabSize, path);
        }

        if (manifest.Layers.Any(l => l is null || l.Experts.Any(e => e is null)))
        {
            throw new ModelFormatException($"{path}: 'layers' holds a null layer or expert entry");
        }

        if (manifest.Layers.Count != c.RoutedLayers || manifest.Layers.Any(l => l.Experts.Count != c.NumExperts))
        {
            throw new ModelFormatException($"{path}: lists {manifest.Layers.Count} layers / {manifest.Experts.Count()} experts, architecture says {c.RoutedLayers} routed layers x {c.NumExperts}");
        }

        // Expert(layer, expert) looks entries up by position: a duplicated or misplaced entry would run the wrong expert's file.
        for (var l = 0; l < manifest.Layers.Count; l++)
        {
            var layer = manifest.Layers[l];
            for (var e = 0; e < layer.Experts.Count; e++)
            {
                var entry = layer.Experts[e];
                if (layer.Layer != l || entry.Layer != l || entry.Expert != e)
                {
                    throw new ModelFormatException(
                        $"{path}: layers[{l}] (layer {layer.Layer}) lists expert {entry.Layer}.{entry.Expert} in place {e}; layer {l} must list its experts {l}.0 to {l}.{c.NumExperts - 1} once each, in order");
                }
            }
        }

        manifest = manifest with { Directory = directory };
        foreach (var (file, data) in manifest.Files())
        {
            InsideDirectory(file);
            if (!ModelFiles.RegularFileExists(manifest.PathOf(file)))
            {
                throw new ModelFormatException($"{path}: listed file {file} is missing");
            }

            if (data is not null)
            {
                InsideDirectory(data.File);
                var dataPath = manifest.PathOf(data.File);
                var bytes = ModelFiles.RegularFileExists(dataPath) ? new FileInfo(dataPath).Length : -1;
                if (bytes != data.Bytes)
                {
                    throw new ModelFormatException(bytes < 0
                        ? $"{dataPath}: the external data of {file} is missing"
                        : $"{dataPath}: the external data of {file} is truncated or changed ({bytes} bytes, the manifest says {data.Bytes})");
                }
            }
        }

        return manifest;

        void InsideDirectory(string file)
        {
            if (!ModelFiles.IsPlainFileName(file))
            {
                throw new ModelFormatException($"{path}: listed file '{file}' is not a file name inside the model directory");
            }
        }
    }

    /// <summary>The manifest in <paramref name="directory"/> as written, without checking its files; null when there is none or it does not parse.</summary>
    public static ModelManifest? TryReadListing(string directory)
    {
        var path = System.IO.Path.Combine(directory, FileName);
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            var manifest = JsonSerializer.Deserialize<ModelManifest>(ModelFiles.ReadJson(path), JsonOptions);
            return manifest is { Embedding: not null, Head: not null, Layers: not null } && manifest.Layers.All(l => l is { Dense: not null, Experts: not null })
                ? manifest
                : null;
        }
        catch (Exception ex) when (ex is JsonException or ModelFormatException)
        {
            return null;
        }
    }

    public void Save(string directory) =>
        File.WriteAllText(System.IO.Path.Combine(directory, FileName), JsonSerializer.Serialize(this, JsonOptions) + "\n");

    /// <summary>Every listed .onnx file with the side file of its external data, if any.</summary>
    public IEnumerable<(string File, ExternalDataFile? ExternalData)> Files() =>
        new[] { Embedding, Head }.Concat(Layers.Select(l => l.Dense)).Concat(Layers.SelectMany(l => l.DenseSteps?.All() ?? []))
            .Select(f => (f.File, f.ExternalData))
            .Concat(Experts.Select(e => (e.File, e.ExternalData)));

    /// <summary>Checks every file's SHA-256 (external data files included) against the manifest; returns the names that differ.</summary>
    public IReadOnlyList<string> FindCorruptFiles()
    {
        var entries = new List<(string File, string Sha)> { (Embedding.File, Embedding.Sha256), (Head.File, Head.Sha256) };
        entries.AddRange(Layers.Select(l => (l.Dense.File, l.Dense.Sha256)));
        entries.AddRange(Layers.SelectMany(l => l.DenseSteps?.All() ?? []).Select(f => (f.File, f.Sha256)));
        entries.AddRange(Experts.Select(e => (e.File, e.Sha256)));
        entries.AddRange(Files().Where(f => f.ExternalData is not null).Select(f => (f.ExternalData!.File, f.ExternalData.Sha256)));
        return [.. entries.Where(e => !File.Exists(PathOf(e.File)) || Sha256Of(PathOf(e.File)) != e.Sha).Select(e => e.File)];
    }

    public static string Sha256Of(string path)
    {
        using var stream = new FileStream(ModelFiles.Open(path), FileAccess.Read);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }
}
