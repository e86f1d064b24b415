using DanceMoE.Operations;

namespace DanceMoE.Lab;

/// <summary>Preconditions the benchmarks share.</summary>
internal static class LabChecks
{
    /// <summary>The benchmarks start their own edges under the local cluster's names: one left running would answer instead.</summary>
    public static void EnsureNoCluster()
    {
        if (LocalCluster.RunningEdges().Count > 0)
        {
            throw new OperationException("a cluster is already running: ./dancemoe cluster down first (the benchmark starts its own)");
        }
    }
}
