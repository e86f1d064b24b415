namespace DanceMoE.Placement;

public enum MigrationAction
{
    Load,
    Unload,
}

/// <summary>One step: load a copy of (layer, expert) onto a server from <paramref name="Source"/>, or drop a copy.</summary>
public sealed record MigrationStep(MigrationAction Action, int Server, int Layer, int Expert, int Source, double Seconds);

/// <summary>
/// Moves from one placement to another in a safe order. <paramref name="Churn"/> is the share of the target's copies
/// that had to be loaded; <paramref name="Seconds"/> is the paper's T_mig: expert bytes over the link into the target,
/// summed over the loads (loads run one after another).
/// </summary>
public sealed record MigrationPlan(IReadOnlyList<MigrationStep> Steps, int Loads, int Unloads, long BytesMoved, double Seconds, double Churn);

/// <summary>The paper's rule over an explicit horizon: migrate only if C(candidate) + T_mig &lt; C(current).</summary>
public sealed record MigrationDecision(bool Migrate, double CurrentCostSeconds, double CandidateCostSeconds, double MigrationSeconds);

public static class MigrationPlanner
{
    /// <summary>
    /// Orders the loads and unloads that turn <paramref name="from"/> into <paramref name="to"/> so that every server
    /// stays within its budget and every expert keeps at least one live copy after every step. Unloads of experts that
    /// still have another copy go first (they free memory), then loads that fit; when neither can proceed (full servers
    /// swapping sole copies), a sole copy is staged on a server with free memory and unloaded again later.
    /// </summary>
    public static MigrationPlan Plan(ExpertPlacement from, ExpertPlacement to, MoeModel model, Cluster cluster)
    {
        ArgumentNullException.ThrowIfNull(from);
        ArgumentNullException.ThrowIfNull(to);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(cluster);
        var violations = to.Violations(model, cluster);
        if (violations.Count > 0)
        {
            throw new ArgumentException($"the target placement is invalid: {violations[0]}", nameof(to));
        }

        var current = from.Clone();
        var servers = cluster.Count;
        var used = Enumerable.Range(0, servers).Select(n => current.BytesOn(n, model)).ToArray();
        var loads = new List<(int Server, int Layer, int Expert)>();
        var unloads = new List<(int Server, int Layer, int Expert)>();
        for (var n = 0; n < servers; n++)
        {
            for (var l = 0; l < model.Layers; l++)
            {
                for (var e = 0; e < model.Experts; e++)
                {
                    var had = from.Holds(n, l, e);
                    var wants = to.Holds(n, l, e);
                    if (wants && !had)
                    {
                        loads.Add((n, l, e));
                    }
                    else if (had && !wants)
                    {
                        unloads.Add((n, l, e));
                    }
                }
            }
        }

        var steps = new List<MigrationStep>();
        long bytes = 0;
        var seconds = 0.0;
        var loadCount = 0;

        void Load(int n, int l, int e)
        {
            var source = BestSource(current, cluster, n, l, e);
            var size = model.Bytes(l, e);
            var time = size / cluster.Link(source, n).BytesPerSecond;
            current.Add(n, l, e);
            used[n] += size;
            bytes += size;
            seconds += time;
            loadCount++;
            steps.Add(new MigrationStep(MigrationAction.Load, n, l, e, source, time));
        }

        void Unload(int n, int l, int e)
        {
            current.Remove(n, l, e);
            used[n] -= model.Bytes(l, e);
            steps.Add(new MigrationStep(MigrationAction.Unload, n, l, e, n, 0));
        }

        // A server waiting to load can free memory by dropping a copy that has another live replica, and load it back later.
        bool DropSpareCopy()
        {
            foreach (var a in loads)
            {
                for (var l = 0; l < model.Layers; l++)
                {
                    for (var e = 0; e < model.Experts; e++)
                    {
                        if (current.Holds(a.Server, l, e) && current.Replicas(l, e) > 1 && model.Bytes(l, e) > 0)
                        {
                            Unload(a.Server, l, e);
                            if (to.Holds(a.Server, l, e))
                            {
                                loads.Add((a.Server, l, e));
                            }

                            return true;
                        }
                    }
                }
            }

            return false;
        }

        var guard = 4 * (loads.Count + unloads.Count + from.TotalReplicas + to.TotalReplicas) + 16;
        while (loads.Count > 0 || unloads.Count > 0)
        {
            var progressed = false;
            foreach (var u in unloads.ToList())
            {
                if (current.Replicas(u.Layer, u.Expert) > 1)
                {
                    Unload(u.Server, u.Layer, u.Expert);
                    unloads.Remove(u);
                    progressed = true;
                }
            }

            foreach (var a in loads.ToList())
            {
                if (used[a.Server] + model.Bytes(a.Layer, a.Expert) <= cluster.Servers[a.Server].MemoryBytes)
                {
                    Load(a.Server, a.Layer, a.Expert);
                    loads.Remove(a);
                    progressed = true;
                }
            }

            if (progressed)
            {
                continue;
            }

            var staged = false;
            foreach (var u in unloads)
            {
                var size = model.Bytes(u.Layer, u.Expert);
                var host = Enumerable.Range(0, servers)
                    .Where(m => !current.Holds(m, u.Layer, u.Expert) && used[m] + size <= cluster.Servers[m].MemoryBytes)
                    .OrderByDescending(m => cluster.Servers[m].MemoryBytes - used[m])
                    .ThenBy(m => m)
                    .DefaultIfEmpty(-1)
                    .First();
                if (host < 0)
                {
                    continue;
                }

                Load(host, u.Layer, u.Expert);
                if (!to.Holds(host, u.Layer, u.Expert))
                {
                    unloads.Add((host, u.Layer, u.Expert));
                }

                staged = true;
                break;
            }

            if (!staged)
            {
                staged = DropSpareCopy();
            }

            if (!staged || steps.Count > guard)
            {
                throw new InvalidOperationException("no order of moves keeps every expert live within the memory budgets (every server is full)");
            }
        }

        var churn = to.TotalReplicas == 0 ? 0 : (double)loadCount / to.TotalReplicas;
        return new MigrationPlan(steps, loadCount, steps.Count - loadCount, bytes, seconds, churn);
    }

    /// <summary>
    /// Costs over the horizon are request-seconds: mean request latency x requests expected in the horizon. The
    /// migration costs its transfer seconds, as in the paper; a longer horizon amortises it over more requests.
    /// </summary>
    public static MigrationDecision Decide(double currentMeanSeconds, double candidateMeanSeconds, double requestsPerSecond, double horizonSeconds, MigrationPlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var current = currentMeanSeconds * requestsPerSecond * horizonSeconds;
        var candidate = candidateMeanSeconds * requestsPerSecond * horizonSeconds;
        return new MigrationDecision(candidate + plan.Seconds < current, current, candidate, plan.Seconds);
    }

    private static int BestSource(ExpertPlacement current, Cluster cluster, int target, int layer, int expert)
    {
        var best = -1;
        for (var s = 0; s < cluster.Count; s++)
        {
            if (s != target && current.Holds(s, layer, expert)
                && (best < 0 || cluster.Link(s, target).BytesPerSecond > cluster.Link(best, target).BytesPerSecond))
            {
                best = s;
            }
        }

        return best < 0 ? throw new InvalidOperationException($"layer {layer} expert {expert} has no live copy to load from") : best;
    }
}
