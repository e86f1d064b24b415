namespace DanceMoE.Placement;

/// <summary>
/// The replica rule of one step, shared by <see cref="LatencyModel"/> and the planner's <see cref="LayerSteps"/> so both route alike:
/// each remote expert goes to the holder whose call costs least with its rows added (which also keeps the step's slowest peer as
/// fast as it can be), ties to a peer the step already calls, then to the lower server.
/// </summary>
internal static class ReplicaChoice
{
    /// <summary>Picks the peer for an expert with <paramref name="rows"/> rows from <paramref name="home"/> and charges it to that peer.</summary>
    /// <param name="holders">Bit s set when server s holds the expert.</param>
    /// <param name="home">The server whose tokens need the expert.</param>
    /// <param name="rows">Rows the expert gets this step.</param>
    /// <param name="linkFixed">Seconds a call on each link (home x peer) costs before its rows.</param>
    /// <param name="linkPerRow">Seconds each row adds on each link.</param>
    /// <param name="cost">Seconds each peer's call costs so far this step (its link's fixed cost once it is used).</param>
    /// <param name="used">Whether the step already calls each peer.</param>
    /// <returns>The chosen server.</returns>
    public static int Pick(
        ulong holders, int home, int rows, ReadOnlySpan<double> linkFixed, ReadOnlySpan<double> linkPerRow, Span<double> cost, Span<bool> used)
    {
        var n = cost.Length;
        var best = -1;
        var bestAfter = double.MaxValue;
        for (var s = 0; s < n; s++)
        {
            if (s == home || (holders & (1UL << s)) == 0)
            {
                continue;
            }

            var link = (home * n) + s;
            var after = (used[s] ? cost[s] : linkFixed[link]) + (rows * linkPerRow[link]);
            if (after < bestAfter || (after == bestAfter && used[s] && !used[best]))
            {
                (best, bestAfter) = (s, after);
            }
        }

        if (best < 0)
        {
            throw new InvalidOperationException($"an expert needed by server {home} has no replica on another server");
        }

        cost[best] = bestAfter;
        used[best] = true;
        return best;
    }
}
