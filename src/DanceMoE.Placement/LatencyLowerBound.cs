using System.Numerics;

namespace DanceMoE.Placement;

/// <summary>
/// A lower bound on the modelled mean request latency that any placement within the slot budgets can reach on a
/// workload, the workload itself known in advance (so the bound holds for a placement planned from any history).
/// Relaxed: coverage and the other servers are ignored, queueing and prefill compute are left out, a remote decode step
/// costs at least the cheapest link's round trip plus the rows of its largest message plus one expert, a prompt not
/// wholly local at least one round trip plus its rows spread evenly over the links to every other server, and each
/// server's slots are shared over layers
/// by a Lagrangian price per slot. At each price every (server, layer) is solved exactly: which experts to hold so
/// that the time saved by the steps and prompts they make local, less the price, is largest, is a project selection
/// (<see cref="MaxClosure"/>). The price is bisected to the best bound.
/// </summary>
public static class LatencyLowerBound
{
    private const int Bisections = 20;

    /// <summary>The bound in ms for the problem's model, cluster and budgets on <paramref name="workload"/>; null when a layer has more than 64 experts.</summary>
    public static double? MeanLatencyMs(PlacementProblem problem, Workload workload, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        return problem.Model.Experts > 64 ? null : Compute(problem, workload, cancellationToken).BoundMs;
    }

    /// <summary>
    /// The bound, and the mean latency of the best layout the relaxation found at a bisected price (what the bound
    /// would be reached by if coverage were not needed): how far the bound is from a layout.
    /// </summary>
    internal static (double BoundMs, double RelaxedLayoutMs) Compute(PlacementProblem problem, Workload workload, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(workload);
        if (workload.Requests.Count == 0)
        {
            return (0, 0);
        }

        var (model, cluster, options) = (problem.Model, problem.Cluster, problem.Latency);

        // Slots of the smallest expert: no placement within the byte budgets holds more experts than this.
        var slots = cluster.Servers.Select(s => (int)Math.Min(s.MemoryBytes / model.ExpertBytes.Min(), (long)model.ExpertCount)).ToArray();

        var servers = cluster.Count;
        var layers = model.Layers;
        var cells = new (double Base, MaxClosure Closure)[servers, layers];
        var byServer = Enumerable.Range(0, servers).Select(n => workload.Requests.Where(r => r.Server == n).ToList()).ToArray();
        Parallel.For(
            0,
            servers * layers,
            new ParallelOptions { CancellationToken = cancellationToken },
            job => cells[job / layers, job % layers] = Cell(model, cluster, options, job / layers, job % layers, byServer[job / layers]));

        var bound = 0.0;
        var layout = 0.0;
        for (var n = 0; n < servers; n++)
        {
            var server = Server(Enumerable.Range(0, layers).Select(l => cells[n, l]).ToArray(), slots[n], cancellationToken);
            bound += server.Bound;
            layout += server.Layout;
        }

        var scale = 1e3 / workload.Requests.Count;
        return (bound * scale, layout * scale);
    }

    /// <summary>One server: its bound at the best bisected price per slot, and its best layout within its slots.</summary>
    private static (double Bound, double Layout) Server((double Base, MaxClosure Closure)[] layers, int slots, CancellationToken cancellationToken)
    {
        var baseSeconds = layers.Sum(l => l.Base);
        var low = 0.0;
        var high = layers.Max(l => l.Closure.TotalProfit) + 1e-9;
        var bound = double.MinValue;
        var layout = baseSeconds;
        for (var i = 0; i < Bisections; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var price = (low + high) / 2;
            var solved = new (double Value, ulong Bought)[layers.Length];
            Parallel.For(0, layers.Length, l => solved[l] = layers[l].Closure.Solve(price));
            var used = solved.Sum(s => BitOperations.PopCount(s.Bought));
            var value = baseSeconds - solved.Sum(s => s.Value) - (price * slots);
            bound = Math.Max(bound, value);

            if (used <= slots)
            {
                layout = Math.Min(layout, baseSeconds - solved.Sum(s => s.Value) - (price * used));
                high = price;
            }
            else
            {
                low = price;
            }
        }

        return (Math.Min(bound, layout), layout);
    }

    /// <summary>
    /// The seconds of one server's requests in one layer when it holds nothing, and what holding experts saves. A token
    /// not wholly local sends at least 2 rows (its input, and one answer: a peer that runs all of its experts answers
    /// their weighted sum), and a prompt's rows share at most servers - 1 links: a token wholly local saves its rows and,
    /// when decoded, the round trip.
    /// </summary>
    private static (double Base, MaxClosure Closure) Cell(MoeModel model, Cluster cluster, LatencyOptions options, int server, int layer, List<TraceRequest> requests)
    {
        var k = model.TopK;
        var others = Enumerable.Range(0, cluster.Count).Where(s => s != server).ToList();
        var local = Enumerable.Range(0, model.Experts).Select(e => ExpertSeconds(model, cluster.Servers[server], layer, e)).ToArray();
        var remoteCompute = others.Count == 0 ? 0 : others.Min(s => Enumerable.Range(0, model.Experts).Min(e => ExpertSeconds(model, cluster.Servers[s], layer, e)));
        var rtt = others.Count == 0 ? 0 : others.Min(s => cluster.Link(server, s).RttSeconds) + options.MessageSeconds;
        var perRow = others.Count == 0 ? 0 : (others.Min(s => model.HiddenBytes / cluster.Link(server, s).BytesPerSecond) / others.Count)
            + (model.HiddenBytes * options.MessageByteSeconds / Math.Max(1, options.MessageLanes));
        var projects = new List<(ulong, double)>();
        var baseSeconds = 0.0;
        foreach (var request in requests)
        {
            var (prompt, _) = options.Split(request.Tokens);
            var ids = request.Experts[layer];
            var promptNeeds = 0UL;
            for (var t = 0; t < request.Tokens; t++)
            {
                var needs = 0UL;
                var localSeconds = 0.0;
                for (var j = 0; j < k; j++)
                {
                    var e = ids[(t * k) + j];
                    if ((needs & (1UL << e)) == 0)
                    {
                        needs |= 1UL << e;
                        localSeconds += local[e];
                    }
                }

                if (others.Count == 0)
                {
                    baseSeconds += t < prompt ? 0 : localSeconds;
                    continue;
                }

                // At least one row comes back: a peer running all of the token's experts answers their sum.
                var rows = perRow;
                if (t < prompt)
                {
                    promptNeeds |= needs;
                    baseSeconds += perRow + rows;
                    projects.Add((needs, perRow + rows));
                }
                else
                {
                    var remoteSeconds = rtt + (others.Count * perRow) + remoteCompute;
                    baseSeconds += remoteSeconds + rows;
                    projects.Add((needs, Math.Max(0, remoteSeconds + rows - localSeconds)));
                }
            }

            baseSeconds += rtt;
            projects.Add((promptNeeds, rtt));
        }

        return (baseSeconds, new MaxClosure(model.Experts, projects));
    }

    private static double ExpertSeconds(MoeModel model, ServerSpec spec, int layer, int expert) =>
        Math.Max(model.Bytes(layer, expert) / spec.MemoryBytesPerSecond, model.FlopsPerToken(layer, expert) / spec.FlopsPerSecond);
}
