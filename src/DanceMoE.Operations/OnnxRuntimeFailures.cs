using DanceMoE.Inference;
using Microsoft.ML.OnnxRuntime;

namespace DanceMoE.Operations;

/// <summary>ONNX Runtime's failures as operation failures, for <c>catch (Exception ex) when (OnnxRuntimeFailures.Translate(ex) is { } failure)</c>.</summary>
public static class OnnxRuntimeFailures
{
    /// <summary>The first line of ONNX Runtime's message, an unavailable execution provider or NaN or infinite logits; null for anything else.</summary>
    public static OperationException? Translate(Exception exception) => exception switch
    {
        OnnxRuntimeException ex => new OperationException($"ONNX Runtime: {ex.Message.Split('\n', 2)[0]}", OperationFailure.Failed, ex),
        ExecutionProviderUnavailableException ex => new OperationException(ex.Message, OperationFailure.Unavailable, ex),
        NonFiniteLogitsException ex => new OperationException(ex.Message, OperationFailure.Failed, ex),
        _ => null,
    };
}
