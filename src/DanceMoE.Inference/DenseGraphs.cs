namespace DanceMoE.Inference;

/// <summary>
/// Which of a routed layer's dense graphs a forward loads where the export has dense steps (a layer without them always
/// runs its one graph). Both give the same bits; each graph set holds the layer's dense weights, so a process that loads
/// both holds them twice.
/// </summary>
public enum DenseGraphs
{
    /// <summary>Both sets: the one graph for a step of one sequence (one run instead of three), the steps for several.</summary>
    Both,

    /// <summary>The one graph, run per sequence: for processes that run one sequence at a time.</summary>
    OneGraph,

    /// <summary>The steps for every step, one sequence or many: for processes that batch (an edge with several active).</summary>
    Steps,
}
