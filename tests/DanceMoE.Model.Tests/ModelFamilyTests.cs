using System.Text.Json.Nodes;
using DanceMoE.Inference;
using DanceMoE.Model.Onnx;
using DanceMoE.Model.Reference;

namespace DanceMoE.Model.Tests;

public sealed class ModelFamilyTests
{
    private static readonly InferenceOptions Cpu = new() { Provider = ExecutionProvider.Cpu, IntraOpThreads = 1 };

    public static TheoryData<string> Families => [.. ModelFamilies.Supported];

    internal static TinyOptions Small(string family) => TinyModels.Small() with { Family = family, Layers = 3 };

    [Theory]
    [MemberData(nameof(Families))]
    public async Task Each_family_exports_and_matches_its_reference_through_prefill_and_decode(string family)
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Sub("ckpt"), Small(family));
        var checkpoint = Checkpoint.Open(dir.Sub("ckpt"));
        Assert.Equal(family, JsonNode.Parse(File.ReadAllText(dir.Sub("ckpt/config.json")))!["model_type"]!.GetValue<string>());

        var manifest = OnnxExporter.Export(checkpoint, dir.Sub("onnx"), TensorDtype.F32);
        var result = await VerifyAsync(ModelManifest.Load(dir.Sub("onnx")), checkpoint, 4);

        Assert.True(result.MaxAbsDiff <= 1e-4, $"{family}: max |logit diff| {result.MaxAbsDiff}");
        var c = manifest.Architecture;
        Assert.Equal(c.RoutedLayers, manifest.Layers.Count);
        Assert.Equal(c.RoutedLayers * c.NumExperts, Directory.GetFiles(dir.Sub("onnx"), "expert.*.onnx").Length);
    }

    /// <summary>Full DeepSeek-V2's options: q through q_a/q_b, group-limited routing, scaled weights, YaRN with a cos/sin scale.</summary>
    [Fact]
    public async Task Deepseek_v2_with_q_lora_group_limited_routing_and_yarn_exports_and_verifies()
    {
        using var dir = new TempDirectory();
        var options = Small(MoeConfig.DeepseekV2);
        var tiny = TinyCheckpoint.Config(options);
        var config = tiny with
        {
            Mla = tiny.Mla! with { QLoraRank = 16 },
            NumGroups = 2,
            TopKGroup = 1,
            RoutedScalingFactor = 2,
            RopeScaling = new YarnScaling { Factor = 4, OriginalMaxPositions = 32, Mscale = 1, MscaleAllDim = 0.5 },
        };
        TinyCheckpoint.Write(dir.Sub("ckpt"), config, options);
        var checkpoint = Checkpoint.Open(dir.Sub("ckpt"));
        Assert.True(config.SameArchitecture(checkpoint.Config));
        Assert.True(checkpoint.Has("model.layers.1.self_attn.q_b_proj.weight"));

        var manifest = OnnxExporter.Export(checkpoint, dir.Sub("onnx"), TensorDtype.F32);
        var result = await VerifyAsync(manifest, checkpoint, 3);

        Assert.True(result.MaxAbsDiff <= 1e-4, $"max |logit diff| {result.MaxAbsDiff}");
    }

    [Theory]
    [InlineData(MoeConfig.Olmoe, "model.layers.1.self_attn.q_norm.weight", "model.layers.1.mlp.experts.3.down_proj.weight")]
    [InlineData(MoeConfig.Qwen2Moe, "model.layers.1.self_attn.k_proj.bias", "model.layers.1.mlp.shared_expert_gate.weight")]
    [InlineData(MoeConfig.Qwen2Moe, "model.layers.2.mlp.shared_expert.up_proj.weight", "model.layers.2.mlp.gate.weight")]
    [InlineData(MoeConfig.DeepseekV2, "model.layers.1.self_attn.kv_a_proj_with_mqa.weight", "model.layers.1.self_attn.kv_b_proj.weight")]
    [InlineData(MoeConfig.DeepseekV2, "model.layers.0.mlp.gate_proj.weight", "model.layers.1.mlp.shared_experts.down_proj.weight")]
    [InlineData(MoeConfig.Mixtral, "model.layers.1.block_sparse_moe.gate.weight", "model.layers.1.block_sparse_moe.experts.3.w2.weight")]
    public void Tiny_checkpoints_use_the_hugging_face_tensor_names_of_their_family(string family, string first, string second)
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Path, Small(family));
        var checkpoint = Checkpoint.Open(dir.Path);
        Assert.True(checkpoint.Has(first), first);
        Assert.True(checkpoint.Has(second), second);
    }

    [Fact]
    public void Deepseek_dense_first_layer_has_no_router_and_its_mlp_runs_in_the_next_layers_dense_subgraph()
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Sub("ckpt"), Small(MoeConfig.DeepseekV2));
        var checkpoint = Checkpoint.Open(dir.Sub("ckpt"));
        Assert.False(checkpoint.Has("model.layers.0.mlp.gate.weight"));
        Assert.Equal([0], checkpoint.Config.DenseLayers);

        var manifest = OnnxExporter.Export(checkpoint, dir.Sub("onnx"), TensorDtype.F32);

        Assert.Equal([[0, 1], [2]], manifest.Layers.Select(l => l.DecoderLayers!.ToArray()));
        Assert.Equal(2, ModelManifest.Load(dir.Sub("onnx")).Architecture.RoutedLayers);
    }

    [Fact]
    public void Qwen_mlp_only_layers_and_sparse_step_choose_the_dense_layers()
    {
        var config = Parse("""
            {"model_type": "qwen2_moe", "vocab_size": 300, "hidden_size": 32, "num_hidden_layers": 6, "num_attention_heads": 4,
             "num_key_value_heads": 4, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16,
             "intermediate_size": 64, "shared_expert_intermediate_size": 64, "decoder_sparse_step": 2, "mlp_only_layers": [3]}
            """);
        Assert.Equal([0, 2, 3, 4], config.DenseLayers);
        Assert.Equal([[0, 1], [2, 3, 4, 5]], config.DecoderLayersOfRoutedLayers());
        Assert.False(config.NormTopKProb);
    }

    [Fact]
    public void A_dense_layer_after_the_last_moe_layer_is_rejected_naming_the_file()
    {
        var ex = Assert.Throws<ModelFormatException>(() => Parse("""
            {"model_type": "qwen2_moe", "vocab_size": 300, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16, "intermediate_size": 64, "mlp_only_layers": [1]}
            """));
        Assert.Contains("config.json: the last layer (1) has a dense MLP", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("topk_method", "\"noaux_tc\"", "'topk_method' is 'noaux_tc'")]
    [InlineData("scoring_func", "\"sigmoid\"", "'scoring_func' is 'sigmoid'")]
    [InlineData("rope_scaling", "{\"type\": \"linear\", \"factor\": 2}", "'rope_scaling' has type \"linear\"")]
    [InlineData("kv_lora_rank", "\"512\"", "'kv_lora_rank' must be an integer")]
    [InlineData("attention_bias", "true", "'attention_bias' is true")]
    public void Unsupported_deepseek_settings_fail_naming_the_field(string key, string value, string message)
    {
        var json = JsonNode.Parse(DeepseekV2LiteConfig(hidden: 32))!.AsObject();
        json[key] = JsonNode.Parse(value);
        var ex = Assert.Throws<ModelFormatException>(() => Parse(json.ToJsonString()));
        Assert.Contains("config.json: " + message, ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(MoeConfig.Mixtral, "{\"type\": \"linear\", \"factor\": 0}")]
    [InlineData(MoeConfig.Mixtral, "{\"type\": \"bogus\"}")]
    [InlineData(MoeConfig.Olmoe, "{\"rope_type\": \"dynamic\", \"factor\": 2}")]
    [InlineData(MoeConfig.Qwen2Moe, "{\"type\": \"yarn\", \"factor\": 4}")]
    public void Rope_scaling_of_a_family_run_without_it_is_refused_naming_the_key(string family, string scaling)
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Path, Small(family));
        var path = Path.Combine(dir.Path, Checkpoint.ConfigFile);
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        json["rope_scaling"] = JsonNode.Parse(scaling);
        File.WriteAllText(path, json.ToJsonString());

        var ex = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(dir.Path));

        Assert.Equal($"{path}: 'rope_scaling' is set; {family} runs without RoPE scaling (only deepseek_v2's yarn is supported)", ex.Message);
    }

    [Fact]
    public void Deepseek_routing_scales_unnormalised_weights_and_keeps_only_the_best_groups()
    {
        float[] logits = [0f, 1f, 3f, 2f, 0.5f, 2.5f];
        var softmax = logits.Select(l => Math.Exp(l)).ToArray();
        var sum = softmax.Sum();
        var greedy = Routing.Choose(new MoeConfig { ModelType = MoeConfig.DeepseekV2, NumExperts = 6, TopK = 2, NormTopKProb = false, RoutedScalingFactor = 16 }, logits);
        Assert.Equal([2, 5], greedy.Select(c => c.Expert));
        Assert.Equal(softmax[2] / sum * 16, greedy[0].Weight, 4);

        // Groups {0,1,2} and {3,4,5}; with one group kept, both experts come from the first.
        var grouped = Routing.Choose(new MoeConfig { ModelType = MoeConfig.DeepseekV2, NumExperts = 6, TopK = 2, NumGroups = 2, TopKGroup = 1, NormTopKProb = true }, logits);
        Assert.Equal([2, 1], grouped.Select(c => c.Expert));
        Assert.Equal(1f, grouped.Sum(c => c.Weight), 5);
    }

    [Fact]
    public void Qwen_and_olmoe_routing_keep_the_softmax_weights_unless_norm_topk_prob()
    {
        float[] logits = [0f, 1f, 3f, 2f];
        var plain = Routing.Choose(new MoeConfig { ModelType = MoeConfig.Olmoe, NumExperts = 4, TopK = 2, NormTopKProb = false }, logits);
        var normed = Routing.Choose(new MoeConfig { ModelType = MoeConfig.Qwen2Moe, NumExperts = 4, TopK = 2, NormTopKProb = true }, logits);
        var sum = logits.Sum(l => Math.Exp(l));
        Assert.Equal(Math.Exp(3) / sum, plain[0].Weight, 5);
        Assert.True(plain.Sum(c => c.Weight) < 0.95f);
        Assert.Equal(1f, normed.Sum(c => c.Weight), 5);
    }

    [Fact]
    public void Yarn_keeps_high_frequencies_interpolates_low_ones_and_scales_the_softmax()
    {
        var lite = Parse(DeepseekV2LiteConfig(hidden: 32));
        var plain = lite with { RopeScaling = null };
        var yarn = Rotary.InverseFrequencies(lite);
        var unscaled = Rotary.InverseFrequencies(plain);

        Assert.Equal(unscaled[0], yarn[0]);
        Assert.Equal(unscaled[^1] / 40, yarn[^1], 1e-12);
        Assert.Equal(1f, Rotary.CosSinScale(lite));
        var mscale = (0.1 * 0.707 * Math.Log(40)) + 1;
        Assert.Equal(mscale * mscale / Math.Sqrt(192), Rotary.SoftmaxScale(lite), 1e-6);
    }

    /// <summary>
    /// DeepSeek-V2-Lite's real structure (27 layers, the first dense, 64 routed + 2 shared experts, top-6, MLA with
    /// kv_lora_rank 512, no q_lora, 16 heads of 128 + 64, yarn) at a small hidden size, vocabulary and context.
    /// </summary>
    [Fact]
    public async Task Deepseek_v2_lite_structure_at_reduced_width_exports_and_verifies()
    {
        using var dir = new TempDirectory();
        var config = Parse(DeepseekV2LiteConfig(hidden: 32));
        Assert.Equal((27, 26, 64, 6, 2), (config.NumLayers, config.RoutedLayers, config.NumExperts, config.TopK, config.SharedIntermediateSize / config.IntermediateSize));
        TinyCheckpoint.Write(dir.Sub("ckpt"), config, new TinyOptions { Seed = 3, Dtype = TensorDtype.BF16 });
        var checkpoint = Checkpoint.Open(dir.Sub("ckpt"));
        Assert.True(config.SameArchitecture(checkpoint.Config));

        var manifest = OnnxExporter.Export(checkpoint, dir.Sub("onnx"), TensorDtype.F32);
        var result = await VerifyAsync(manifest, checkpoint, 1, prompt: "MoE");

        Assert.Equal(26 * 64, manifest.Experts.Count());
        Assert.True(result.MaxAbsDiff <= 1e-4, $"max |logit diff| {result.MaxAbsDiff}");
    }

    [Fact]
    public void A_missing_family_tensor_fails_naming_the_file_and_tensor()
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Path, Small(MoeConfig.DeepseekV2) with { MaxShardBytes = 64 * 1024 });
        var index = Path.Combine(dir.Path, Checkpoint.IndexFile);
        var json = JsonNode.Parse(File.ReadAllText(index))!.AsObject();
        json["weight_map"]!.AsObject().Remove("model.layers.1.self_attn.kv_b_proj.weight");
        File.WriteAllText(index, json.ToJsonString());

        var ex = Assert.Throws<ModelFormatException>(() => MoeWeights.Load(Checkpoint.Open(dir.Path)));

        Assert.Contains("model.safetensors.index.json", ex.Message, StringComparison.Ordinal);
        Assert.Contains("'model.layers.1.self_attn.kv_b_proj.weight' is missing", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_mis_shaped_family_tensor_fails_naming_the_file_tensor_and_both_shapes()
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Path, Small(MoeConfig.Qwen2Moe));
        var config = Path.Combine(dir.Path, Checkpoint.ConfigFile);
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"shared_expert_intermediate_size\": 128", "\"shared_expert_intermediate_size\": 96", StringComparison.Ordinal));

        var ex = Assert.Throws<ModelFormatException>(() => MoeWeights.Load(Checkpoint.Open(dir.Path)));

        Assert.Contains("model.safetensors: tensor 'model.layers.0.mlp.shared_expert.gate_proj.weight' has shape [128, 32], expected [96, 32]", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_truncated_shard_fails_naming_the_shard_and_a_tensor_it_cuts()
    {
        using var dir = new TempDirectory();
        TinyCheckpoint.Write(dir.Path, Small(MoeConfig.Olmoe) with { MaxShardBytes = 64 * 1024 });
        var last = Directory.GetFiles(dir.Path, "model-*.safetensors").Order(StringComparer.Ordinal).Last();
        using (var stream = File.Open(last, FileMode.Open))
        {
            stream.SetLength(stream.Length - 100);
        }

        var ex = Assert.Throws<ModelFormatException>(() => Checkpoint.Open(dir.Path));

        Assert.Contains(Path.GetFileName(last) + ": truncated: tensor '", ex.Message, StringComparison.Ordinal);
    }

    internal static string DeepseekV2LiteConfig(int hidden) => $$"""
        {
          "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "vocab_size": 258,
          "hidden_size": {{hidden}}, "intermediate_size": {{hidden * 2}}, "moe_intermediate_size": {{hidden / 2}},
          "num_hidden_layers": 27, "num_attention_heads": 16, "num_key_value_heads": 16,
          "n_shared_experts": 2, "n_routed_experts": 64, "ep_size": 1, "routed_scaling_factor": 1.0,
          "kv_lora_rank": 512, "q_lora_rank": null, "qk_rope_head_dim": 64, "v_head_dim": 128, "qk_nope_head_dim": 128,
          "topk_method": "greedy", "n_group": 1, "topk_group": 1, "num_experts_per_tok": 6, "moe_layer_freq": 1,
          "first_k_dense_replace": 1, "norm_topk_prob": false, "scoring_func": "softmax", "aux_loss_alpha": 0.001,
          "seq_aux": true, "hidden_act": "silu", "max_position_embeddings": 64, "initializer_range": 0.02,
          "rms_norm_eps": 1e-06, "use_cache": true, "bos_token_id": 256, "eos_token_id": 257, "pretraining_tp": 1,
          "tie_word_embeddings": false, "rope_theta": 10000,
          "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707, "mscale_all_dim": 0.707,
                           "original_max_position_embeddings": 4096, "type": "yarn"},
          "attention_bias": false, "attention_dropout": 0.0, "torch_dtype": "bfloat16"
        }
        """;

    private static MoeConfig Parse(string json) => MoeConfig.Parse(JsonNode.Parse(json)!.AsObject(), "config.json");

    private static async Task<VerifyResult> VerifyAsync(ModelManifest manifest, Checkpoint checkpoint, int decodeSteps, string prompt = "mixture of experts")
    {
        var reference = new ReferenceModel(MoeWeights.Load(checkpoint));
        using var pool = new ExpertSessionPool(manifest, new SessionFactory(Cpu));
        using var forward = new MoeForward(manifest, new SessionFactory(Cpu), new LocalExpertDispatcher(pool));
        return await ModelVerifier.VerifyAsync(forward, reference, ByteTokenizer.Default.Encode(prompt), decodeSteps, CancellationToken.None);
    }
}
