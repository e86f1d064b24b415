using System.Diagnostics;
using System.Numerics;

namespace DanceMoE.Placement;

/// <summary>
/// Our planner: minimises the modelled mean request latency of the history requests instead of the call count.
/// <para>
/// Why the call count is not enough: a decode step at a layer avoids a round trip only when ALL top-k experts of the
/// token are local, so slots spread thinly by frequency over every layer still pay a round trip almost everywhere,
/// while the same slots concentrated into whole layers make those layers free. Prefill instead pays for bytes, which
/// favours spreading. The mean latency is a sum over layers of per-layer terms, so the search can price every change
/// by re-running only the layers it touches.
/// </para>
/// Seeds: the exact optimum of the call count, and an owner layout (each layer held whole by one server, chosen where
/// the server's own tokens are least covered by a frequency share, the rest filled by frequency). Each seed is improved
/// by steepest descent over moves "server n frees d slots in layer a (replicated experts it uses least) and takes d
/// missing experts of layer b" and "server n fills free slots", d in {1, 4, 16, E}; the experts taken are the most
/// frequent or those completing most whole token sets (co-activation). The better result on the history wins.
/// <para>
/// Every move improves a valid placement, so a spent <see cref="TimeBudget"/> ends the search with the best placement
/// so far (the seeds are always computed); cancellation throws, as for every algorithm.
/// </para>
/// </summary>
public sealed class LatencyPlacement : IPlacementAlgorithm
{
    public string Name => PlacementAlgorithms.Latency;

    /// <summary>Upper bound on improving moves per seed (each move is cheap; this only bounds the solve time).</summary>
    public int MaxMoves { get; init; } = 400;

    /// <summary>Time after which the search stops improving and returns its best placement; null for no limit.</summary>
    public TimeSpan? TimeBudget { get; init; }

    public ExpertPlacement Place(PlacementProblem problem, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(problem);
        problem.EnsureFeasible();
        var clock = Stopwatch.StartNew();
        var optimal = new OptimalPlacement().Place(problem, cancellationToken);
        if (problem.History is null || problem.History.Requests.Count == 0)
        {
            return optimal;
        }

        var search = new LocalSearch(problem, MaxMoves);
        bool Spent() => TimeBudget is { } budget && clock.Elapsed >= budget;
        var fromOptimal = search.Improve(optimal, Spent, cancellationToken);
        var fromOwners = search.Improve(OwnerSeed(problem, search), Spent, cancellationToken);
        return fromOwners.Seconds < fromOptimal.Seconds ? fromOwners.Placement : fromOptimal.Placement;
    }

    internal static ExpertPlacement OwnerSeed(PlacementProblem problem, LocalSearch search)
    {
        var model = problem.Model;
        var f = problem.Activations;
        var slots = problem.Slots();
        var servers = slots.Length;
        var experts = model.Experts;
        var placement = new ExpertPlacement(servers, model.Layers, experts);
        var value = search.WholeLayerValue(slots);
        var owned = new bool[model.Layers];
        var full = new int[servers];

        while (true)
        {
            var (n, l) = BestPair(value, (n, l) => !owned[l] && slots[n] - (full[n] * experts) >= experts);
            if (n < 0)
            {
                break;
            }

            Fill(placement, n, l, experts);
            owned[l] = true;
            full[n]++;
        }

        for (var l = 0; l < model.Layers; l++)
        {
            if (owned[l])
            {
                continue;
            }

            var layer = l;
            foreach (var e in Enumerable.Range(0, experts).OrderByDescending(e => f.Global(layer, e)).ThenBy(e => e))
            {
                var host = -1;
                for (var n = 0; n < servers; n++)
                {
                    if (placement.Count(n) < slots[n] && (host < 0 || f[n, l, e] > f[host, l, e]))
                    {
                        host = n;
                    }
                }

                placement.Add(host, l, e);
            }
        }

        while (true)
        {
            var (n, l) = BestPair(value, (n, l) => placement.CountLayer(n, l) < experts && slots[n] - placement.Count(n) >= experts - placement.CountLayer(n, l));
            if (n < 0)
            {
                break;
            }

            Fill(placement, n, l, experts);
        }

        for (var n = 0; n < servers; n++)
        {
            var server = n;
            var free = slots[n] - placement.Count(n);
            var missing = Enumerable.Range(0, model.ExpertCount)
                .Where(i => !placement.Holds(server, i / experts, i % experts))
                .OrderByDescending(i => f[server, i / experts, i % experts])
                .ThenBy(i => i)
                .Take(free);
            foreach (var i in missing)
            {
                placement.Add(n, i / experts, i % experts);
            }
        }

        return placement;
    }

    private static (int Server, int Layer) BestPair(double[,] value, Func<int, int, bool> allowed)
    {
        var best = (Server: -1, Layer: -1);
        for (var n = 0; n < value.GetLength(0); n++)
        {
            for (var l = 0; l < value.GetLength(1); l++)
            {
                if (allowed(n, l) && (best.Server < 0 || value[n, l] > value[best.Server, best.Layer]))
                {
                    best = (n, l);
                }
            }
        }

        return best;
    }

    private static void Fill(ExpertPlacement placement, int server, int layer, int experts)
    {
        for (var e = 0; e < experts; e++)
        {
            placement.Add(server, layer, e);
        }
    }
}

/// <summary>Steepest descent on the modelled latency of the history requests, layer by layer.</summary>
internal sealed class LocalSearch
{
    private readonly PlacementProblem _problem;
    private readonly LatencyModel _latency;
    private readonly IReadOnlyList<TraceRequest> _requests;
    private readonly int[] _slots;
    private readonly int[][][] _rank;
    private readonly int[] _steps;
    private readonly int _maxMoves;
    private readonly ulong[][][] _decodeMasks;

    public LocalSearch(PlacementProblem problem, int maxMoves)
    {
        _problem = problem;
        _maxMoves = maxMoves;
        _latency = new LatencyModel(problem.Model, problem.Cluster, problem.Latency);
        _requests = problem.History!.Requests;
        _slots = problem.Slots();
        var model = problem.Model;
        var f = problem.Activations;
        _rank = new int[_slots.Length][][];
        for (var n = 0; n < _slots.Length; n++)
        {
            _rank[n] = new int[model.Layers][];
            for (var l = 0; l < model.Layers; l++)
            {
                var server = n;
                var layer = l;
                _rank[n][l] = Enumerable.Range(0, model.Experts).OrderByDescending(e => f[server, layer, e]).ThenBy(e => e).ToArray();
            }
        }

        // Each decode token of a server as a bit set of its experts, for the co-activation scores.
        var words = (model.Experts + 63) / 64;
        _decodeMasks = new ulong[_slots.Length][][];
        for (var n = 0; n < _slots.Length; n++)
        {
            _decodeMasks[n] = new ulong[model.Layers][];
            var mine = _requests.Where(r => r.Server == n).ToList();
            for (var l = 0; l < model.Layers; l++)
            {
                var masks = new List<ulong>();
                foreach (var request in mine)
                {
                    var (prompt, _) = problem.Latency.Split(request.Tokens);
                    for (var t = prompt; t < request.Tokens; t++)
                    {
                        var mask = new ulong[words];
                        for (var j = 0; j < model.TopK; j++)
                        {
                            var e = request.Experts[l][(t * model.TopK) + j];
                            mask[e >> 6] |= 1UL << (e & 63);
                        }

                        masks.AddRange(mask);
                    }
                }

                _decodeMasks[n][l] = [.. masks];
            }
        }

        _steps = new[] { 1, 4, 16, model.Experts }.Where(d => d <= model.Experts).Distinct().ToArray();
    }

    public double Seconds(ExpertPlacement placement) =>
        Enumerable.Range(0, _problem.Model.Layers).Sum(l => _latency.LayerSeconds(placement, _requests, l));

    /// <summary>
    /// How much server n gains from holding layer l whole: its decode tokens at l that its frequency share of slots
    /// (slots / layers, most used first) would not cover completely.
    /// </summary>
    public double[,] WholeLayerValue(int[] slots)
    {
        var model = _problem.Model;
        var value = new double[slots.Length, model.Layers];
        for (var n = 0; n < slots.Length; n++)
        {
            var share = Math.Min(model.Experts, slots[n] / model.Layers);
            for (var l = 0; l < model.Layers; l++)
            {
                var inShare = new bool[model.Experts];
                foreach (var e in _rank[n][l].Take(share))
                {
                    inShare[e] = true;
                }

                foreach (var request in _requests.Where(r => r.Server == n))
                {
                    var (prompt, _) = _problem.Latency.Split(request.Tokens);
                    var ids = request.Experts[l];
                    for (var t = prompt; t < request.Tokens; t++)
                    {
                        var covered = true;
                        for (var j = 0; j < model.TopK && covered; j++)
                        {
                            covered = inShare[ids[(t * model.TopK) + j]];
                        }

                        if (!covered)
                        {
                            value[n, l]++;
                        }
                    }
                }
            }
        }

        return value;
    }

    public (ExpertPlacement Placement, double Seconds) Improve(ExpertPlacement seed, Func<bool> spent, CancellationToken cancellationToken)
    {
        var model = _problem.Model;
        var servers = _slots.Length;
        var layers = model.Layers;
        var p = seed.Clone();
        var cost = new double[layers];
        var shrink = new double[servers, layers, _steps.Length];
        var grow = new double[servers, layers, _steps.Length * 2];
        for (var l = 0; l < layers; l++)
        {
            cost[l] = _latency.LayerSeconds(p, _requests, l);
        }

        for (var l = 0; l < layers && !spent(); l++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Price(p, l, cost[l], shrink, grow);
        }

        for (var move = 0; move < _maxMoves && !spent(); move++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var best = (Delta: -1e-9 * cost.Sum(), Server: -1, From: -1, To: -1, Step: -1, Coactivation: false);
            for (var n = 0; n < servers; n++)
            {
                var free = _slots[n] - p.Count(n);
                for (var s = 0; s < _steps.Length; s++)
                {
                    var (first, second) = TwoCheapest(shrink, n, s);
                    for (var to = 0; to < layers; to++)
                    {
                        for (var kind = 0; kind < 2; kind++)
                        {
                            var g = grow[n, to, (s * 2) + kind];
                            if (double.IsNaN(g))
                            {
                                continue;
                            }

                            if (free >= _steps[s] && g < best.Delta)
                            {
                                best = (g, n, -1, to, s, kind == 1);
                            }

                            var from = first == to ? second : first;
                            if (from >= 0 && g + shrink[n, from, s] < best.Delta)
                            {
                                best = (g + shrink[n, from, s], n, from, to, s, kind == 1);
                            }
                        }
                    }
                }
            }

            if (best.Server < 0)
            {
                break;
            }

            var d = _steps[best.Step];
            var removed = best.From >= 0 ? ShrinkSet(p, best.Server, best.From, d) : [];
            var added = GrowSet(p, best.Server, best.To, d, best.Coactivation);

            // Slots are counted at the largest expert size; with unequal sizes a swap can still overflow the bytes.
            var bytes = p.BytesOn(best.Server, model) + added.Sum(e => model.Bytes(best.To, e)) - removed.Sum(e => model.Bytes(best.From, e));
            if (bytes > _problem.Cluster.Servers[best.Server].MemoryBytes)
            {
                grow[best.Server, best.To, (best.Step * 2) + (best.Coactivation ? 1 : 0)] = double.NaN;
                continue;
            }

            if (best.From >= 0)
            {
                foreach (var e in removed)
                {
                    p.Remove(best.Server, best.From, e);
                }

                cost[best.From] = _latency.LayerSeconds(p, _requests, best.From);
                Price(p, best.From, cost[best.From], shrink, grow);
            }

            foreach (var e in added)
            {
                p.Add(best.Server, best.To, e);
            }

            cost[best.To] = _latency.LayerSeconds(p, _requests, best.To);
            Price(p, best.To, cost[best.To], shrink, grow);
        }

        return (p, cost.Sum());
    }

    private static (int First, int Second) TwoCheapest(double[,,] shrink, int n, int s)
    {
        var first = -1;
        var second = -1;
        for (var l = 0; l < shrink.GetLength(1); l++)
        {
            var v = shrink[n, l, s];
            if (double.IsNaN(v))
            {
                continue;
            }

            if (first < 0 || v < shrink[n, first, s])
            {
                second = first;
                first = l;
            }
            else if (second < 0 || v < shrink[n, second, s])
            {
                second = l;
            }
        }

        return (first, second);
    }

    /// <summary>
    /// Prices every shrink and grow of one layer for every server and step. The variants are independent, so they run
    /// in parallel, each on its own copy of the placement and its own latency model (the model keeps scratch buffers).
    /// </summary>
    private void Price(ExpertPlacement p, int layer, double current, double[,,] shrink, double[,,] grow)
    {
        var jobs = _slots.Length * _steps.Length * 3;
        Parallel.For(
            0,
            jobs,
            () => new LatencyModel(_problem.Model, _problem.Cluster, _problem.Latency),
            (job, _, model) =>
            {
                var n = job / (_steps.Length * 3);
                var s = job / 3 % _steps.Length;
                var add = job % 3 != 0;
                var coactivation = job % 3 == 2;
                var d = _steps[s];
                var experts = add ? GrowSet(p, n, layer, d, coactivation) : ShrinkSet(p, n, layer, d);
                var delta = double.NaN;

                // A co-activation set equal to the frequency set is the same move: price it once.
                var duplicate = coactivation && experts.Order().SequenceEqual(GrowSet(p, n, layer, d, coactivation: false).Order());
                if (experts.Count == d && !duplicate)
                {
                    var variant = p.Clone();
                    foreach (var e in experts)
                    {
                        if (add)
                        {
                            variant.Add(n, layer, e);
                        }
                        else
                        {
                            variant.Remove(n, layer, e);
                        }
                    }

                    delta = model.LayerSeconds(variant, _requests, layer) - current;
                }

                if (add)
                {
                    grow[n, layer, (s * 2) + (coactivation ? 1 : 0)] = delta;
                }
                else
                {
                    shrink[n, layer, s] = delta;
                }

                return model;
            },
            _ => { });
    }

    /// <summary>The d experts server n uses least in the layer among those another server also holds.</summary>
    private List<int> ShrinkSet(ExpertPlacement p, int n, int layer, int d)
    {
        var set = new List<int>(d);
        var order = _rank[n][layer];
        for (var i = order.Length - 1; i >= 0 && set.Count < d; i--)
        {
            var e = order[i];
            if (p.Holds(n, layer, e) && p.Replicas(layer, e) > 1)
            {
                set.Add(e);
            }
        }

        return set;
    }

    /// <summary>
    /// The d experts server n lacks in the layer: by its own frequency, or by co-activation, those that complete most
    /// of its decode tokens (a token counts 1 for its last missing expert, 1/2 when two are missing, and so on;
    /// frequency breaks ties).
    /// </summary>
    private List<int> GrowSet(ExpertPlacement p, int n, int layer, int d, bool coactivation)
    {
        if (!coactivation)
        {
            return _rank[n][layer].Where(e => !p.Holds(n, layer, e)).Take(d).ToList();
        }

        var experts = _problem.Model.Experts;
        var set = new List<int>(d);
        var missingCount = 0;
        for (var e = 0; e < experts; e++)
        {
            if (!p.Holds(n, layer, e))
            {
                missingCount++;
            }
        }

        if (missingCount <= d)
        {
            set.AddRange(Enumerable.Range(0, experts).Where(e => !p.Holds(n, layer, e)));
            return set;
        }

        var words = (experts + 63) / 64;
        var masks = _decodeMasks[n][layer];
        var held = p.LayerBits(n, layer);
        Span<ulong> open = stackalloc ulong[words];
        for (var w = 0; w < words; w++)
        {
            open[w] = ~held[w];
        }

        var score = new double[experts];
        while (set.Count < d)
        {
            Array.Clear(score);
            for (var t = 0; t < masks.Length; t += words)
            {
                var missing = 0;
                for (var w = 0; w < words; w++)
                {
                    missing += BitOperations.PopCount(masks[t + w] & open[w]);
                }

                if (missing == 0)
                {
                    continue;
                }

                var weight = 1.0 / (1 << (missing - 1));
                for (var w = 0; w < words; w++)
                {
                    var bits = masks[t + w] & open[w];
                    while (bits != 0)
                    {
                        score[(w * 64) + BitOperations.TrailingZeroCount(bits)] += weight;
                        bits &= bits - 1;
                    }
                }
            }

            var best = -1;
            foreach (var e in _rank[n][layer])
            {
                if ((open[e >> 6] & (1UL << (e & 63))) != 0 && (best < 0 || score[e] > score[best]))
                {
                    best = e;
                }
            }

            open[best >> 6] &= ~(1UL << (best & 63));
            set.Add(best);
        }

        return set;
    }
}
