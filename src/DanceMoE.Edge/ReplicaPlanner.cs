namespace DanceMoE.Edge;

/// <summary>An expert this edge must have run elsewhere in one step of one layer, with its token rows.</summary>
public readonly record struct ExpertDemand(int Expert, int Rows);

/// <summary>
/// Chooses, for one step of one layer, which replica runs each remote expert so that the slowest peer of the step
/// answers as early as possible: the layer waits for all of them.
/// <para>
/// The model: a peer given any expert costs its estimated round trip plus <see cref="QueuedBatchMs"/> per batch it
/// reported queued, once (one message per peer), plus <see cref="RowMs"/> per token row given to it. Greedy: experts
/// with one possible replica are placed first, then the others by most rows, then expert id; each goes to the replica
/// that makes the step's largest cost smallest, ties to the replica whose own cost stays lowest, then one already used
/// (fewer messages), then placement order, then edge id.
/// </para>
/// <para>
/// Possible replicas exclude this edge and the excluded peer. Peers that failed since they last answered are avoided;
/// when all of an expert's replicas are, only the one that failed longest ago is possible. An expert with no possible
/// replica is absent from the result.
/// </para>
/// </summary>
public static class ReplicaPlanner
{
    /// <summary>Estimated cost of one token row of one expert on a peer, in milliseconds.</summary>
    public const double RowMs = 0.05;

    /// <summary>Estimated wait behind one batch a peer reported queued, in milliseconds.</summary>
    public const double QueuedBatchMs = 2;

    /// <summary>Maps each expert of <paramref name="needed"/> to the peer that should run it.</summary>
    /// <param name="placement">The placement whose replicas are chosen from.</param>
    /// <param name="layer">The layer of the step.</param>
    /// <param name="needed">The experts this edge does not hold (the same expert twice counts its rows once, added).</param>
    /// <param name="self">This edge's id, never chosen.</param>
    /// <param name="exclude">A peer not to choose (the one a retry moves away from), or null.</param>
    /// <param name="estimates">This edge's estimates of its peers.</param>
    public static IReadOnlyDictionary<int, string> Choose(
        EdgePlacement placement, int layer, IEnumerable<ExpertDemand> needed, string self, string? exclude, PeerEstimates estimates)
    {
        ArgumentNullException.ThrowIfNull(placement);
        ArgumentNullException.ThrowIfNull(needed);
        ArgumentNullException.ThrowIfNull(estimates);
        var known = new Dictionary<string, PeerEstimate>(StringComparer.Ordinal);
        PeerEstimate Known(string peer)
        {
            if (!known.TryGetValue(peer, out var estimate))
            {
                estimate = estimates.Get(peer);
                known.Add(peer, estimate);
            }

            return estimate;
        }

        var experts = needed.GroupBy(d => d.Expert)
            .Select(g => (Expert: g.Key, Rows: g.Sum(d => d.Rows), Replicas: Possible(placement.ServersOf(layer, g.Key), self, exclude, Known)))
            .Where(e => e.Replicas.Count > 0)
            .OrderBy(e => e.Replicas.Count == 1 ? 0 : 1)
            .ThenByDescending(e => e.Rows)
            .ThenBy(e => e.Expert)
            .ToList();

        var costs = new Dictionary<string, double>(StringComparer.Ordinal);
        var largest = 0.0;
        var chosen = new Dictionary<int, string>();
        foreach (var (expert, rows, replicas) in experts)
        {
            var best = replicas
                .Select((peer, order) =>
                {
                    var used = costs.TryGetValue(peer, out var cost);
                    var after = (used ? cost : BaseMs(Known(peer))) + (RowMs * rows);
                    return (Peer: peer, After: after, Used: used, Order: order);
                })
                .OrderBy(c => Math.Max(largest, c.After))
                .ThenBy(c => c.After)
                .ThenBy(c => c.Used ? 0 : 1)
                .ThenBy(c => c.Order)
                .ThenBy(c => c.Peer, StringComparer.Ordinal)
                .First();
            costs[best.Peer] = best.After;
            largest = Math.Max(largest, best.After);
            chosen.Add(expert, best.Peer);
        }

        return chosen;
    }

    private static double BaseMs(PeerEstimate peer) => peer.EstimateMs + (QueuedBatchMs * peer.QueueDepth);

    private static List<string> Possible(IReadOnlyList<string> servers, string self, string? exclude, Func<string, PeerEstimate> known)
    {
        var peers = servers.Where(s => !string.Equals(s, self, StringComparison.Ordinal) && !string.Equals(s, exclude, StringComparison.Ordinal)).ToList();
        var trusted = peers.Where(p => !known(p).Avoided).ToList();
        if (trusted.Count > 0 || peers.Count == 0)
        {
            return trusted;
        }

        return [peers.MinBy(p => known(p).FailedAt)!];
    }
}
