using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace DanceMoE.Model;

/// <summary>The architecture of a Mixtral-layout MoE model, as read from a Hugging Face `config.json`.</summary>
public sealed record MoeConfig
{
    public const string Mixtral = "mixtral";

    public string ModelType { get; init; } = Mixtral;
    public int VocabSize { get; init; }
    public int HiddenSize { get; init; }
    public int IntermediateSize { get; init; }
    public int NumLayers { get; init; }
    public int NumHeads { get; init; }
    public int NumKvHeads { get; init; }
    public int HeadDim { get; init; }
    public int NumExperts { get; init; }
    public int TopK { get; init; }
    public double RmsNormEps { get; init; } = 1e-5;
    public double RopeTheta { get; init; } = 1e6;
    public int MaxPositions { get; init; }
    public bool TieWordEmbeddings { get; init; }
    public int? BosTokenId { get; init; }
    public int? EosTokenId { get; init; }
    public string TorchDtype { get; init; } = "float32";

    [JsonIgnore]
    public int QueryWidth => NumHeads * HeadDim;

    [JsonIgnore]
    public int KvWidth => NumKvHeads * HeadDim;

    public static MoeConfig Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new ModelFormatException($"{path}: file not found");
        }

        JsonObject root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                ?? throw new ModelFormatException($"{path}: not a JSON object");
        }
        catch (JsonException ex)
        {
            throw new ModelFormatException($"{path}: invalid JSON ({ex.Message})", ex);
        }

        return Parse(root, path);
    }

    public static MoeConfig Parse(JsonObject root, string source)
    {
        ArgumentNullException.ThrowIfNull(root);
        var modelType = Str(root, "model_type", source);
        if (!string.Equals(modelType, Mixtral, StringComparison.Ordinal))
        {
            throw new ModelFormatException($"{source}: unsupported model_type '{modelType}' (supported: {Mixtral})");
        }

        var hidden = Int(root, "hidden_size", source);
        var heads = Int(root, "num_attention_heads", source);
        var config = new MoeConfig
        {
            ModelType = modelType,
            VocabSize = Int(root, "vocab_size", source),
            HiddenSize = hidden,
            IntermediateSize = Int(root, "intermediate_size", source),
            NumLayers = Int(root, "num_hidden_layers", source),
            NumHeads = heads,
            NumKvHeads = OptInt(root, "num_key_value_heads", source) ?? heads,
            HeadDim = OptInt(root, "head_dim", source) ?? (heads > 0 ? hidden / heads : 0),
            NumExperts = Int(root, "num_local_experts", source),
            TopK = Int(root, "num_experts_per_tok", source),
            RmsNormEps = OptDouble(root, "rms_norm_eps", source) ?? 1e-5,
            RopeTheta = OptDouble(root, "rope_theta", source) ?? 1e6,
            MaxPositions = OptInt(root, "max_position_embeddings", source) ?? 4096,
            TieWordEmbeddings = root["tie_word_embeddings"] is JsonValue tie && tie.TryGetValue<bool>(out var t) && t,
            BosTokenId = OptInt(root, "bos_token_id", source),
            EosTokenId = root["eos_token_id"] is JsonArray eos && eos.Count > 0 ? eos[0]?.GetValue<int>() : OptInt(root, "eos_token_id", source),
            TorchDtype = root["torch_dtype"] is JsonValue dt && dt.TryGetValue<string>(out var s) ? s : "float32",
        };
        config.Validate(source);
        return config;
    }

    public void Validate(string source)
    {
        Positive(VocabSize, "vocab_size");
        Positive(HiddenSize, "hidden_size");
        Positive(IntermediateSize, "intermediate_size");
        Positive(NumLayers, "num_hidden_layers");
        Positive(NumHeads, "num_attention_heads");
        Positive(NumKvHeads, "num_key_value_heads");
        Positive(HeadDim, "head_dim");
        Positive(NumExperts, "num_local_experts");
        Positive(TopK, "num_experts_per_tok");
        Positive(MaxPositions, "max_position_embeddings");
        if (NumHeads % NumKvHeads != 0)
        {
            throw new ModelFormatException($"{source}: num_attention_heads ({NumHeads}) is not a multiple of num_key_value_heads ({NumKvHeads})");
        }

        if (HeadDim % 2 != 0)
        {
            throw new ModelFormatException($"{source}: head_dim ({HeadDim}) must be even for RoPE");
        }

        if (TopK > NumExperts)
        {
            throw new ModelFormatException($"{source}: num_experts_per_tok ({TopK}) exceeds num_local_experts ({NumExperts})");
        }

        void Positive(int value, string key)
        {
            if (value <= 0)
            {
                throw new ModelFormatException($"{source}: '{key}' must be positive (got {value.ToString(CultureInfo.InvariantCulture)})");
            }
        }
    }

    public JsonObject ToJson() => new()
    {
        ["architectures"] = new JsonArray("MixtralForCausalLM"),
        ["model_type"] = ModelType,
        ["vocab_size"] = VocabSize,
        ["hidden_size"] = HiddenSize,
        ["intermediate_size"] = IntermediateSize,
        ["num_hidden_layers"] = NumLayers,
        ["num_attention_heads"] = NumHeads,
        ["num_key_value_heads"] = NumKvHeads,
        ["head_dim"] = HeadDim,
        ["num_local_experts"] = NumExperts,
        ["num_experts_per_tok"] = TopK,
        ["rms_norm_eps"] = RmsNormEps,
        ["rope_theta"] = RopeTheta,
        ["max_position_embeddings"] = MaxPositions,
        ["tie_word_embeddings"] = TieWordEmbeddings,
        ["bos_token_id"] = BosTokenId,
        ["eos_token_id"] = EosTokenId,
        ["torch_dtype"] = TorchDtype,
        ["hidden_act"] = "silu",
    };

    private static string Str(JsonObject root, string key, string source) =>
        root[key] is JsonValue v && v.TryGetValue<string>(out var s)
            ? s
            : throw new ModelFormatException($"{source}: missing or non-string '{key}'");

    private static int Int(JsonObject root, string key, string source) =>
        OptInt(root, key, source) ?? throw new ModelFormatException($"{source}: missing '{key}'");

    private static int? OptInt(JsonObject root, string key, string source)
    {
        var node = root[key];
        if (node is null)
        {
            return null;
        }

        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<int>(out var i))
        {
            return i;
        }

        throw new ModelFormatException($"{source}: '{key}' must be an integer (got {node.ToJsonString()})");
    }

    private static double? OptDouble(JsonObject root, string key, string source)
    {
        var node = root[key];
        if (node is null)
        {
            return null;
        }

        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.Number)
        {
            return v.GetValue<double>();
        }

        throw new ModelFormatException($"{source}: '{key}' must be a number (got {node.ToJsonString()})");
    }
}
