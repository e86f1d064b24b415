using System.Text.Json.Nodes;

namespace DanceMoE.Model;

/// <summary>
/// What differs between the supported `model_type`s in `config.json`: each family's keys for the expert counts and
/// widths, its dense layers, shared experts, routing rule and attention variant.
/// </summary>
public static class ModelFamilies
{
    public static IReadOnlyList<string> Supported { get; } = [MoeConfig.Mixtral, MoeConfig.Olmoe, MoeConfig.Qwen2Moe, MoeConfig.DeepseekV2];

    internal static MoeConfig ParseFamily(MoeConfig common, ConfigJson json)
    {
        var config = common.ModelType switch
        {
            MoeConfig.Mixtral => common with
            {
                NumExperts = json.Int("num_local_experts"),
                IntermediateSize = json.Int("intermediate_size"),
            },
            MoeConfig.Olmoe => Olmoe(common, json),
            MoeConfig.Qwen2Moe => Qwen2Moe(common, json),
            MoeConfig.DeepseekV2 => DeepseekV2(common, json),
            var other => throw new ModelFormatException(
                $"{json.Source}: unsupported model_type '{other}' (supported: {string.Join(", ", Supported)})"),
        };
        if (common.ModelType != MoeConfig.DeepseekV2 && json.OptObject("rope_scaling") is not null)
        {
            json.Unsupported("rope_scaling", $"is set; {common.ModelType} runs without RoPE scaling (only deepseek_v2's yarn is supported)");
        }

        if (json.OptStr("hidden_act") is { } act && act != "silu")
        {
            json.Unsupported("hidden_act", $"is '{act}'; only silu experts are supported");
        }

        return config;
    }

    private static MoeConfig Olmoe(MoeConfig common, ConfigJson json)
    {
        if (json.OptDouble("clip_qkv") is not null)
        {
            json.Unsupported("clip_qkv", "is set; clipping q, k and v is not supported");
        }

        NoAttentionBias(json);
        return common with
        {
            NumExperts = json.Int("num_experts"),
            IntermediateSize = json.Int("intermediate_size"),
            NormTopKProb = json.Bool("norm_topk_prob"),
            QkNorm = true,
        };
    }

    private static MoeConfig Qwen2Moe(MoeConfig common, ConfigJson json)
    {
        if (json.Bool("use_sliding_window"))
        {
            json.Unsupported("use_sliding_window", "is true; sliding-window attention is not supported");
        }

        var experts = json.Int("num_experts");
        var step = json.OptInt("decoder_sparse_step") ?? 1;
        if (step < 1)
        {
            json.Unsupported("decoder_sparse_step", "must be at least 1");
        }

        var mlpOnly = json.Ints("mlp_only_layers");
        var dense = Enumerable.Range(0, common.NumLayers).Where(l => mlpOnly.Contains(l) || (l + 1) % step != 0).ToList();
        return common with
        {
            NumExperts = experts,
            IntermediateSize = json.Int("moe_intermediate_size"),
            DenseIntermediateSize = json.Int("intermediate_size"),
            DenseLayers = dense,
            SharedIntermediateSize = json.OptInt("shared_expert_intermediate_size") ?? 0,
            SharedExpertGate = true,
            NormTopKProb = json.Bool("norm_topk_prob"),
            QkvBias = true,
        };
    }

    private static MoeConfig DeepseekV2(MoeConfig common, ConfigJson json)
    {
        NoAttentionBias(json);
        if (json.OptStr("scoring_func") is { } scoring && scoring != "softmax")
        {
            json.Unsupported("scoring_func", $"is '{scoring}'; only softmax is supported");
        }

        var topkMethod = json.OptStr("topk_method") ?? "greedy";
        if (topkMethod is not ("greedy" or "group_limited_greedy"))
        {
            json.Unsupported("topk_method", $"is '{topkMethod}'; supported: greedy, group_limited_greedy");
        }

        var firstDense = json.OptInt("first_k_dense_replace") ?? 0;
        var freq = json.OptInt("moe_layer_freq") ?? 1;
        if (freq < 1)
        {
            json.Unsupported("moe_layer_freq", "must be at least 1");
        }

        var moeWidth = json.Int("moe_intermediate_size");
        return common with
        {
            NumKvHeads = common.NumHeads,
            HeadDim = json.Int("qk_nope_head_dim") + json.Int("qk_rope_head_dim"),
            NumExperts = json.Int("n_routed_experts"),
            IntermediateSize = moeWidth,
            DenseIntermediateSize = json.Int("intermediate_size"),
            DenseLayers = [.. Enumerable.Range(0, common.NumLayers).Where(l => l < firstDense || l % freq != 0)],
            SharedIntermediateSize = (json.OptInt("n_shared_experts") ?? 0) * moeWidth,
            NormTopKProb = json.Bool("norm_topk_prob"),
            RoutedScalingFactor = json.OptDouble("routed_scaling_factor") ?? 1,
            NumGroups = topkMethod == "greedy" ? 1 : json.Int("n_group"),
            TopKGroup = topkMethod == "greedy" ? 1 : json.Int("topk_group"),
            Mla = new MlaConfig
            {
                KvLoraRank = json.Int("kv_lora_rank"),
                QLoraRank = json.OptInt("q_lora_rank"),
                QkNopeHeadDim = json.Int("qk_nope_head_dim"),
                QkRopeHeadDim = json.Int("qk_rope_head_dim"),
                VHeadDim = json.Int("v_head_dim"),
            },
            RopeScaling = Yarn(json),
        };
    }

    private static YarnScaling? Yarn(ConfigJson json)
    {
        if (json.OptObject("rope_scaling") is not { } scaling)
        {
            return null;
        }

        var type = scaling["type"] ?? scaling["rope_type"];
        if (type is not JsonValue name || !name.TryGetValue<string>(out var kind) || kind != "yarn")
        {
            json.Unsupported("rope_scaling", $"has type {type?.ToJsonString() ?? "null"}; only yarn (or null) is supported");
        }

        double Number(string key, double fallback) => json.OptDouble(scaling, key) ?? fallback;
        return new YarnScaling
        {
            Factor = Number("factor", 1),
            OriginalMaxPositions = (int)Number("original_max_position_embeddings", 4096),
            BetaFast = Number("beta_fast", 32),
            BetaSlow = Number("beta_slow", 1),
            Mscale = Number("mscale", 1),
            MscaleAllDim = Number("mscale_all_dim", 0),
        };
    }

    private static void NoAttentionBias(ConfigJson json)
    {
        if (json.Bool("attention_bias"))
        {
            json.Unsupported("attention_bias", "is true; attention biases are not supported for this model_type");
        }
    }

    internal static JsonObject ToJson(MoeConfig c)
    {
        var json = new JsonObject
        {
            ["architectures"] = new JsonArray(c.ModelType switch
            {
                MoeConfig.Olmoe => "OlmoeForCausalLM",
                MoeConfig.Qwen2Moe => "Qwen2MoeForCausalLM",
                MoeConfig.DeepseekV2 => "DeepseekV2ForCausalLM",
                _ => "MixtralForCausalLM",
            }),
            ["model_type"] = c.ModelType,
            ["vocab_size"] = c.VocabSize,
            ["hidden_size"] = c.HiddenSize,
            ["num_hidden_layers"] = c.NumLayers,
            ["num_attention_heads"] = c.NumHeads,
            ["num_key_value_heads"] = c.NumKvHeads,
            ["num_experts_per_tok"] = c.TopK,
            ["rms_norm_eps"] = c.RmsNormEps,
            ["rope_theta"] = c.RopeTheta,
            ["max_position_embeddings"] = c.MaxPositions,
            ["tie_word_embeddings"] = c.TieWordEmbeddings,
            ["bos_token_id"] = c.BosTokenId,
            ["eos_token_id"] = c.EosTokenId,
            ["torch_dtype"] = c.TorchDtype,
            ["hidden_act"] = "silu",
        };
        switch (c.ModelType)
        {
            case MoeConfig.Olmoe:
                json["head_dim"] = c.HeadDim;
                json["num_experts"] = c.NumExperts;
                json["intermediate_size"] = c.IntermediateSize;
                json["norm_topk_prob"] = c.NormTopKProb;
                json["attention_bias"] = false;
                json["clip_qkv"] = null;
                break;
            case MoeConfig.Qwen2Moe:
                json["num_experts"] = c.NumExperts;
                json["moe_intermediate_size"] = c.IntermediateSize;
                json["intermediate_size"] = c.DenseIntermediateSize;
                json["shared_expert_intermediate_size"] = c.SharedIntermediateSize;
                json["decoder_sparse_step"] = 1;
                json["mlp_only_layers"] = new JsonArray([.. c.DenseLayers.Select(l => (JsonNode)l)]);
                json["norm_topk_prob"] = c.NormTopKProb;
                json["use_sliding_window"] = false;
                break;
            case MoeConfig.DeepseekV2:
                var mla = c.Mla!;
                var firstDense = Enumerable.Range(0, c.NumLayers).TakeWhile(c.IsDenseLayer).Count();
                if (c.DenseLayers.Count != firstDense)
                {
                    throw new InvalidOperationException("deepseek_v2 configs describe dense layers by first_k_dense_replace only");
                }

                json["n_routed_experts"] = c.NumExperts;
                json["n_shared_experts"] = c.SharedIntermediateSize / c.IntermediateSize;
                json["moe_intermediate_size"] = c.IntermediateSize;
                json["intermediate_size"] = c.DenseIntermediateSize;
                json["first_k_dense_replace"] = firstDense;
                json["moe_layer_freq"] = 1;
                json["norm_topk_prob"] = c.NormTopKProb;
                json["routed_scaling_factor"] = c.RoutedScalingFactor;
                json["topk_method"] = c.NumGroups == 1 ? "greedy" : "group_limited_greedy";
                json["n_group"] = c.NumGroups;
                json["topk_group"] = c.TopKGroup;
                json["scoring_func"] = "softmax";
                json["kv_lora_rank"] = mla.KvLoraRank;
                json["q_lora_rank"] = mla.QLoraRank;
                json["qk_nope_head_dim"] = mla.QkNopeHeadDim;
                json["qk_rope_head_dim"] = mla.QkRopeHeadDim;
                json["v_head_dim"] = mla.VHeadDim;
                json["attention_bias"] = false;
                json["rope_scaling"] = c.RopeScaling is not { } y ? null : new JsonObject
                {
                    ["type"] = "yarn",
                    ["factor"] = y.Factor,
                    ["original_max_position_embeddings"] = y.OriginalMaxPositions,
                    ["beta_fast"] = y.BetaFast,
                    ["beta_slow"] = y.BetaSlow,
                    ["mscale"] = y.Mscale,
                    ["mscale_all_dim"] = y.MscaleAllDim,
                };
                break;
            default:
                json["head_dim"] = c.HeadDim;
                json["num_local_experts"] = c.NumExperts;
                json["intermediate_size"] = c.IntermediateSize;
                break;
        }

        return json;
    }
}
