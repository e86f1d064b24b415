using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace DanceMoE.Model;

/// <summary>Multi-head latent attention (DeepSeek-V2): ranks and head widths as in its `config.json`.</summary>
public sealed record MlaConfig
{
    /// <summary>q_a_layernorm and kv_a_layernorm use DeepseekV2RMSNorm's default epsilon, not rms_norm_eps.</summary>
    public const double LatentNormEps = 1e-6;

    public int KvLoraRank { get; init; }

    /// <summary>Null (DeepSeek-V2-Lite): queries come straight from q_proj; otherwise through q_a_proj, q_a_layernorm, q_b_proj.</summary>
    public int? QLoraRank { get; init; }

    public int QkNopeHeadDim { get; init; }
    public int QkRopeHeadDim { get; init; }
    public int VHeadDim { get; init; }
}

/// <summary>YaRN `rope_scaling` as DeepSeek-V2 configures it.</summary>
public sealed record YarnScaling
{
    public double Factor { get; init; } = 1;
    public int OriginalMaxPositions { get; init; }
    public double BetaFast { get; init; } = 32;
    public double BetaSlow { get; init; } = 1;
    public double Mscale { get; init; } = 1;
    public double MscaleAllDim { get; init; }
}

/// <summary>
/// The architecture of an MoE checkpoint, read from a Hugging Face `config.json` of one of the families in
/// <see cref="ModelFamilies"/>. <see cref="IntermediateSize"/> is the width of a routed expert; layers listed in
/// <see cref="DenseLayers"/> have a dense MLP of <see cref="DenseIntermediateSize"/> instead of experts.
/// </summary>
public sealed record MoeConfig
{
    public const string Mixtral = "mixtral";
    public const string Olmoe = "olmoe";
    public const string Qwen2Moe = "qwen2_moe";
    public const string DeepseekV2 = "deepseek_v2";

    // Far above any published MoE (hidden 16,384, vocab 262,144, 384 experts, 10M positions), and low enough that a row of
    // activations, heads x head_dim and vocab x hidden stay inside the int and long arithmetic that sizes them later.
    private const int MaxVocab = 1 << 22;
    private const int MaxWidth = 1 << 17;
    private const int MaxHeadWidth = 1 << 12;
    private const int MaxCount = 1 << 12;
    private const int MaxExperts = 1 << 16;
    private const int MaxContext = 1 << 24;

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

    /// <summary>Routing: softmax over all experts, top-k, then renormalised when true (Mixtral always).</summary>
    public bool NormTopKProb { get; init; } = true;

    /// <summary>DeepSeek-V2: multiplies the routing weights when they are not renormalised.</summary>
    public double RoutedScalingFactor { get; init; } = 1;

    /// <summary>DeepSeek-V2 `group_limited_greedy`: the top-k come from the best <see cref="TopKGroup"/> of <see cref="NumGroups"/> groups.</summary>
    public int NumGroups { get; init; } = 1;

    public int TopKGroup { get; init; } = 1;

    /// <summary>Decoder layers with a dense MLP instead of routed experts (`first_k_dense_replace`, `mlp_only_layers`, ...).</summary>
    public IReadOnlyList<int> DenseLayers { get; init; } = [];

    public int DenseIntermediateSize { get; init; }

    /// <summary>Width of the shared expert(s) beside the routed ones, 0 without; they run with the dense part, never placed.</summary>
    public int SharedIntermediateSize { get; init; }

    /// <summary>Qwen2-MoE: the shared expert's output is scaled by sigmoid(shared_expert_gate(x)).</summary>
    public bool SharedExpertGate { get; init; }

    /// <summary>OLMoE: RMSNorm over the whole q and k projections before RoPE.</summary>
    public bool QkNorm { get; init; }

    /// <summary>Qwen2-MoE: q, k and v projections have biases.</summary>
    public bool QkvBias { get; init; }

    public MlaConfig? Mla { get; init; }

    public YarnScaling? RopeScaling { get; init; }

    [JsonIgnore]
    public int QueryWidth => NumHeads * KeyHeadDim;

    [JsonIgnore]
    public int KvWidth => NumKvHeads * HeadDim;

    /// <summary>Heads the KV cache holds per layer: every query head under MLA (its full keys and values are cached).</summary>
    [JsonIgnore]
    public int CacheHeads => Mla is null ? NumKvHeads : NumHeads;

    [JsonIgnore]
    public int KeyHeadDim => Mla is null ? HeadDim : Mla.QkNopeHeadDim + Mla.QkRopeHeadDim;

    [JsonIgnore]
    public int ValueHeadDim => Mla?.VHeadDim ?? HeadDim;

    /// <summary>The part of each query/key head RoPE rotates (its last dims).</summary>
    [JsonIgnore]
    public int RopeDim => Mla?.QkRopeHeadDim ?? HeadDim;

    /// <summary>Layers with routed experts: the layers of placement, routing traces and the exported manifest.</summary>
    [JsonIgnore]
    public int RoutedLayers => NumLayers - DenseLayers.Count;

    public bool IsDenseLayer(int layer) => DenseLayers.Contains(layer);

    /// <summary>Equal but for the storage dtype (record equality compares <see cref="DenseLayers"/> by reference).</summary>
    public bool SameArchitecture(MoeConfig other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return this with { TorchDtype = other.TorchDtype, DenseLayers = other.DenseLayers } == other && DenseLayers.SequenceEqual(other.DenseLayers);
    }

    /// <summary>
    /// The decoder layers each routed layer's dense subgraph runs: the dense-MLP layers before it, then its own
    /// attention, shared expert and router.
    /// </summary>
    public IReadOnlyList<int[]> DecoderLayersOfRoutedLayers()
    {
        var groups = new List<int[]>();
        var pending = new List<int>();
        for (var l = 0; l < NumLayers; l++)
        {
            pending.Add(l);
            if (!IsDenseLayer(l))
            {
                groups.Add([.. pending]);
                pending.Clear();
            }
        }

        return groups;
    }

    public static MoeConfig Load(string path)
    {
        if (!ModelFiles.RegularFileExists(path))
        {
            throw new ModelFormatException($"{path}: file not found");
        }

        JsonObject root;
        try
        {
            root = ModelFiles.ParseJson(ModelFiles.ReadJson(path)) as JsonObject
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
        var json = new ConfigJson(root, source);
        var modelType = json.Str("model_type");
        var hidden = json.Int("hidden_size");
        var heads = json.Int("num_attention_heads");
        var common = new MoeConfig
        {
            ModelType = modelType,
            VocabSize = json.Int("vocab_size"),
            HiddenSize = hidden,
            NumLayers = json.Int("num_hidden_layers"),
            NumHeads = heads,
            NumKvHeads = json.OptInt("num_key_value_heads") ?? heads,
            HeadDim = json.OptInt("head_dim") ?? (heads > 0 ? hidden / heads : 0),
            TopK = json.Int("num_experts_per_tok"),
            RmsNormEps = json.OptDouble("rms_norm_eps") ?? 1e-5,
            RopeTheta = json.OptDouble("rope_theta") ?? 1e6,
            MaxPositions = json.OptInt("max_position_embeddings") ?? 4096,
            TieWordEmbeddings = json.Bool("tie_word_embeddings"),
            BosTokenId = json.OptTokenId("bos_token_id"),
            EosTokenId = json.OptTokenId("eos_token_id"),
            TorchDtype = root["torch_dtype"] is JsonValue dt && dt.TryGetValue<string>(out var s) ? s : "float32",
        };
        var config = ModelFamilies.ParseFamily(common, json);
        config.Validate(source);
        return config;
    }

    public void Validate(string source)
    {
        Positive(VocabSize, "vocab_size", MaxVocab);
        Positive(HiddenSize, "hidden_size", MaxWidth);
        Positive(IntermediateSize, "intermediate_size", MaxWidth);
        Positive(NumLayers, "num_hidden_layers", MaxCount);
        Positive(NumHeads, "num_attention_heads", MaxCount);
        Positive(NumKvHeads, "num_key_value_heads", MaxCount);
        Positive(HeadDim, "head_dim", MaxHeadWidth);
        Positive(NumExperts, "num_local_experts", MaxExperts);
        Positive(TopK, "num_experts_per_tok", MaxExperts);
        Positive(MaxPositions, "max_position_embeddings", MaxContext);
        InRange(SharedIntermediateSize, "shared_expert_intermediate_size", 0, MaxWidth);
        PositiveFinite(RmsNormEps, "rms_norm_eps");
        PositiveFinite(RopeTheta, "rope_theta");
        TokenId(BosTokenId, "bos_token_id");
        TokenId(EosTokenId, "eos_token_id");
        if (RopeScaling is { } yarn)
        {
            PositiveFinite(yarn.Factor, "rope_scaling.factor");
            Positive(yarn.OriginalMaxPositions, "rope_scaling.original_max_position_embeddings", MaxContext);
        }

        if (NumHeads % NumKvHeads != 0)
        {
            throw new ModelFormatException($"{source}: num_attention_heads ({NumHeads}) is not a multiple of num_key_value_heads ({NumKvHeads})");
        }

        if (RopeDim % 2 != 0)
        {
            throw new ModelFormatException($"{source}: {(Mla is null ? "head_dim" : "qk_rope_head_dim")} ({RopeDim}) must be even for RoPE");
        }

        if (TopK > NumExperts)
        {
            throw new ModelFormatException($"{source}: num_experts_per_tok ({TopK}) exceeds num_local_experts ({NumExperts})");
        }

        if (DenseLayers.Any(l => l < 0 || l >= NumLayers) || DenseLayers.Distinct().Count() != DenseLayers.Count)
        {
            throw new ModelFormatException($"{source}: dense layers [{string.Join(", ", DenseLayers)}] are not distinct layers of {NumLayers}");
        }

        if (DenseLayers.Count > 0)
        {
            Positive(DenseIntermediateSize, "intermediate_size", MaxWidth);
            if (IsDenseLayer(NumLayers - 1))
            {
                throw new ModelFormatException(
                    $"{source}: the last layer ({NumLayers - 1}) has a dense MLP; dense layers after the last MoE layer are not supported");
            }
        }

        if (NumGroups < 1 || NumExperts % NumGroups != 0 || TopKGroup < 1 || TopKGroup > NumGroups)
        {
            throw new ModelFormatException($"{source}: n_group ({NumGroups}) must divide the experts ({NumExperts}) and topk_group ({TopKGroup}) be 1 to n_group");
        }

        if (Mla is { } mla)
        {
            Positive(mla.KvLoraRank, "kv_lora_rank", MaxWidth);
            Positive(mla.QkNopeHeadDim, "qk_nope_head_dim", MaxHeadWidth);
            Positive(mla.QkRopeHeadDim, "qk_rope_head_dim", MaxHeadWidth);
            Positive(mla.VHeadDim, "v_head_dim", MaxHeadWidth);
            if (mla.QLoraRank is { } q)
            {
                Positive(q, "q_lora_rank", MaxWidth);
            }
        }

        void PositiveFinite(double value, string key)
        {
            if (!double.IsFinite(value) || value <= 0)
            {
                throw new ModelFormatException($"{source}: '{key}' must be a positive number (got {value.ToString(CultureInfo.InvariantCulture)})");
            }
        }

        void TokenId(int? id, string key)
        {
            if (id is { } value && (value < 0 || value >= VocabSize))
            {
                throw new ModelFormatException(
                    $"{source}: '{key}' must be a token of the vocabulary, 0 to {(VocabSize - 1).ToString(CultureInfo.InvariantCulture)} (got {value.ToString(CultureInfo.InvariantCulture)})");
            }
        }

        void Positive(int value, string key, int max) => InRange(value, key, 1, max);

        void InRange(int value, string key, int min, int max)
        {
            if (value < min || value > max)
            {
                throw new ModelFormatException(string.Create(CultureInfo.InvariantCulture, $"{source}: '{key}' must be {min} to {max:N0} (got {value})"));
            }
        }
    }

    /// <summary>The Hugging Face `config.json` of this architecture, with the family's own keys.</summary>
    public JsonObject ToJson() => ModelFamilies.ToJson(this);
}

/// <summary>Typed reads of `config.json` keys; every error names the file and the key.</summary>
internal sealed class ConfigJson(JsonObject root, string source)
{
    public string Source => source;

    public string Str(string key) =>
        root[key] is JsonValue v && v.TryGetValue<string>(out var s)
            ? s
            : throw new ModelFormatException($"{source}: missing or non-string '{key}'");

    public string? OptStr(string key) =>
        root[key] switch
        {
            null => null,
            JsonValue v when v.TryGetValue<string>(out var s) => s,
            var node => throw new ModelFormatException($"{source}: '{key}' must be a string (got {node.ToJsonString()})"),
        };

    public int Int(string key) => OptInt(key) ?? throw new ModelFormatException($"{source}: missing '{key}'");

    public int? OptInt(string key)
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

    /// <summary>A special token's id: an integer, or a list of them (Hugging Face allows several end tokens; the first is used).</summary>
    public int? OptTokenId(string key) =>
        root[key] switch
        {
            JsonArray { Count: > 0 } ids when ids.All(IsInt) => ids[0]!.GetValue<int>(),
            JsonArray ids => throw new ModelFormatException($"{source}: '{key}' must be an integer or a non-empty list of integers (got {ids.ToJsonString()})"),
            _ => OptInt(key),
        };

    public double? OptDouble(string key) => OptDouble(root, key);

    public double? OptDouble(JsonObject obj, string key)
    {
        var node = obj[key];
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

    public bool Bool(string key, bool fallback = false) =>
        root[key] switch
        {
            null => fallback,
            JsonValue v when v.TryGetValue<bool>(out var b) => b,
            var node => throw new ModelFormatException($"{source}: '{key}' must be true or false (got {node.ToJsonString()})"),
        };

    public IReadOnlyList<int> Ints(string key) =>
        root[key] switch
        {
            null => [],
            JsonArray a when a.All(IsInt) => [.. a.Select(n => n!.GetValue<int>())],
            var node => throw new ModelFormatException($"{source}: '{key}' must be a list of integers (got {node.ToJsonString()})"),
        };

    private static bool IsInt(JsonNode? node) => node is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<int>(out _);

    public JsonObject? OptObject(string key) =>
        root[key] switch
        {
            null => null,
            JsonObject o => o,
            var node => throw new ModelFormatException($"{source}: '{key}' must be an object or null (got {node.ToJsonString()})"),
        };

    public void Unsupported(string key, string why) => throw new ModelFormatException($"{source}: '{key}' {why}");
}
