namespace DanceMoE.Model;

/// <summary>How the routed experts' projections are stored in an export; the rest of the model keeps its weight dtype.</summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1720", Justification = "the formats' own names, as manifests and the CLI spell them")]
public enum ExpertWeightFormat
{
    Fp32,
    Fp16,

    /// <summary>8-bit integers, block-wise scales and zero points (ONNX Runtime's MatMulNBits).</summary>
    Int8,

    /// <summary>4-bit integers, block-wise scales and zero points (ONNX Runtime's MatMulNBits).</summary>
    Int4,
}
