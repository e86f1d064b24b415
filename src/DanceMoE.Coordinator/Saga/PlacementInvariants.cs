using DanceMoE.Contracts;

namespace DanceMoE.Coordinator.Saga;

/// <summary>What every placement the coordinator activates must satisfy: each expert has a replica on a live edge, and no live edge is given more than its budget.</summary>
public static class PlacementInvariants
{
    public static IReadOnlyList<string> Check(IReadOnlyList<ExpertAssignment> assignments, PlacementJobOptions model, IReadOnlyList<EdgeMember> liveEdges)
    {
        ArgumentNullException.ThrowIfNull(assignments);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(liveEdges);
        var violations = new List<string>();
        var live = liveEdges.ToDictionary(e => e.EdgeId, StringComparer.Ordinal);
        var servers = assignments.ToDictionary(a => (a.Layer, a.Expert), a => a.Servers);
        for (var l = 0; l < model.Layers; l++)
        {
            for (var e = 0; e < model.Experts; e++)
            {
                if (!servers.TryGetValue((l, e), out var on) || !on.Any(live.ContainsKey))
                {
                    violations.Add($"expert {l}.{e} has no replica on a live edge");
                }
            }
        }

        foreach (var edge in liveEdges)
        {
            var count = assignments.Count(a => a.Servers.Contains(edge.EdgeId, StringComparer.Ordinal));
            if (count * model.ExpertBytes > edge.MemoryBudgetBytes)
            {
                violations.Add($"{edge.EdgeId} would hold {count} experts ({count * model.ExpertBytes} bytes), over its budget of {edge.MemoryBudgetBytes} bytes");
            }
        }

        return violations;
    }
}
