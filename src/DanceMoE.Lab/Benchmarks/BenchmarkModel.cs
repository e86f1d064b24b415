using DanceMoE.Model;
using DanceMoE.Operations;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>Opens the exported model a benchmark was pointed at; a broken manifest is the user's error, not a crash.</summary>
internal static class BenchmarkModel
{
    public static ModelManifest Load(string directory)
    {
        try
        {
            return ModelManifest.Load(directory);
        }
        catch (ModelFormatException ex)
        {
            throw new OperationException(ex.Message, OperationFailure.Failed, ex);
        }
    }
}
