using System.Globalization;

namespace DanceMoE.Model;

/// <summary>Hugging Face tensor names of a family's checkpoint (Mixtral's block_sparse_moe.w1/w2/w3, the others' mlp.*).</summary>
public sealed class TensorNames(MoeConfig config)
{
    public const string Embed = MixtralNames.Embed;
    public const string FinalNorm = MixtralNames.FinalNorm;
    public const string LmHead = MixtralNames.LmHead;

    private bool IsMixtral => config.ModelType == MoeConfig.Mixtral;

    public static string InputNorm(int layer) => MixtralNames.InputNorm(layer);

    public static string PostNorm(int layer) => MixtralNames.PostNorm(layer);

    /// <summary>`self_attn.{part}.weight` (or `.bias`): q_proj, k_proj, q_norm, kv_a_proj_with_mqa, kv_b_proj, ...</summary>
    public static string Attention(int layer, string part, string kind = "weight") => Layer(layer, $"self_attn.{part}.{kind}");

    public string Router(int layer) => IsMixtral ? MixtralNames.Router(layer) : Layer(layer, "mlp.gate.weight");

    /// <summary>A routed expert's projection: "gate", "up" or "down".</summary>
    public string Expert(int layer, int expert, string projection) =>
        IsMixtral
            ? MixtralNames.Expert(layer, expert, projection switch { "gate" => 1, "down" => 2, _ => 3 })
            : Layer(layer, $"mlp.experts.{expert}.{projection}_proj.weight");

    /// <summary>DeepSeek-V2's `mlp.shared_experts.*` (all shared experts as one MLP), Qwen2-MoE's `mlp.shared_expert.*`.</summary>
    public string Shared(int layer, string projection) =>
        Layer(layer, config.ModelType == MoeConfig.DeepseekV2 ? $"mlp.shared_experts.{projection}_proj.weight" : $"mlp.shared_expert.{projection}_proj.weight");

    public static string SharedGate(int layer) => Layer(layer, "mlp.shared_expert_gate.weight");

    /// <summary>The MLP of a dense layer.</summary>
    public static string DenseMlp(int layer, string projection) => Layer(layer, $"mlp.{projection}_proj.weight");

    private static string Layer(int layer, string rest) =>
        string.Create(CultureInfo.InvariantCulture, $"model.layers.{layer}.{rest}");
}
