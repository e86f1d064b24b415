using System.Globalization;

namespace DanceMoE.Model;

/// <summary>Tensor names of the Hugging Face Mixtral layout.</summary>
public static class MixtralNames
{
    public const string Embed = "model.embed_tokens.weight";
    public const string FinalNorm = "model.norm.weight";
    public const string LmHead = "lm_head.weight";

    public static string InputNorm(int layer) => Layer(layer, "input_layernorm.weight");

    public static string PostNorm(int layer) => Layer(layer, "post_attention_layernorm.weight");

    public static string Attention(int layer, char projection) => Layer(layer, $"self_attn.{projection}_proj.weight");

    public static string Router(int layer) => Layer(layer, "block_sparse_moe.gate.weight");

    /// <summary>w1 is the gate projection, w3 the up projection, w2 the down projection.</summary>
    public static string Expert(int layer, int expert, int w) =>
        Layer(layer, string.Create(CultureInfo.InvariantCulture, $"block_sparse_moe.experts.{expert}.w{w}.weight"));

    private static string Layer(int layer, string rest) =>
        string.Create(CultureInfo.InvariantCulture, $"model.layers.{layer}.{rest}");
}
