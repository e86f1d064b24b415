using DanceMoE.Contracts;
using DanceMoE.Placement;

namespace DanceMoE.Coordinator;

/// <summary>Between the planner's placement (servers by index) and the registry's assignments (edges by id).</summary>
public static class PlacementAssignments
{
    /// <summary>One assignment per layer and expert naming the edges that hold it; server n is <paramref name="edgeIds"/>[n].</summary>
    public static List<ExpertAssignment> From(ExpertPlacement placement, IReadOnlyList<string> edgeIds)
    {
        ArgumentNullException.ThrowIfNull(placement);
        ArgumentNullException.ThrowIfNull(edgeIds);
        var list = new List<ExpertAssignment>(placement.Layers * placement.Experts);
        for (var l = 0; l < placement.Layers; l++)
        {
            for (var e = 0; e < placement.Experts; e++)
            {
                var servers = Enumerable.Range(0, placement.Servers).Where(n => placement.Holds(n, l, e)).Select(n => edgeIds[n]).ToList();
                list.Add(new ExpertAssignment { Layer = l, Expert = e, Servers = servers });
            }
        }

        return list;
    }

    /// <summary>
    /// The placement of <paramref name="assignments"/> over the edges of <paramref name="index"/> (edge id to server
    /// index); replicas on edges not in the index (down, or outside the model) are left out.
    /// </summary>
    public static ExpertPlacement ToPlacement(IEnumerable<ExpertAssignment> assignments, IReadOnlyDictionary<string, int> index, int layers, int experts)
    {
        ArgumentNullException.ThrowIfNull(assignments);
        ArgumentNullException.ThrowIfNull(index);
        var placement = new ExpertPlacement(index.Count, layers, experts);
        foreach (var assignment in assignments.Where(a => a.Layer < layers && a.Expert < experts))
        {
            foreach (var server in assignment.Servers)
            {
                if (index.TryGetValue(server, out var n))
                {
                    placement.Add(n, assignment.Layer, assignment.Expert);
                }
            }
        }

        return placement;
    }
}
