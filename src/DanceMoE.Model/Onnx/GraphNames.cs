namespace DanceMoE.Model.Onnx;

/// <summary>Tensor names at the boundaries of the exported graphs.</summary>
public static class GraphNames
{
    public const string InputIds = "input_ids";
    public const string Hidden = "hidden";
    public const string PositionIds = "position_ids";
    public const string AttentionMask = "attention_mask";
    public const string PastKey = "past_key";
    public const string PastValue = "past_value";
    public const string Residual = "residual";
    public const string ExpertInput = "expert_input";
    public const string RouterLogits = "router_logits";
    public const string NewKey = "new_key";
    public const string NewValue = "new_value";
    public const string Query = "query";
    public const string Key = "key";
    public const string Value = "value";
    public const string AttentionOutput = "attention";
    public const string ExpertX = "x";
    public const string ExpertY = "y";
    public const string Logits = "logits";

    public const string EmbeddingGraph = "embedding";
    public const string DenseGraph = "dense";
    public const string DenseProjectionsGraph = "dense_projections";
    public const string DenseAttentionGraph = "dense_attention";
    public const string DenseOutputGraph = "dense_output";
    public const string ExpertGraph = "expert";
    public const string HeadGraph = "head";

    /// <summary>Additive attention mask value for positions a query must not see.</summary>
    public const float MaskedOut = -1e9f;
}
