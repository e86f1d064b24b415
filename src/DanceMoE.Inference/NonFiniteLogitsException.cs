namespace DanceMoE.Inference;

/// <summary>The model computed NaN or infinite logits: damaged weights, which greedy decoding would otherwise turn into token 0 after token 0.</summary>
public sealed class NonFiniteLogitsException()
    : Exception("the model computed NaN or infinite logits: its weights are damaged (model verify compares an export with its checkpoint)");
