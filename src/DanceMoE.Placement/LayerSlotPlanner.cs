using System.Numerics;

namespace DanceMoE.Placement;

/// <summary>
/// The latency planner: how many slots each server gives each layer, and which experts, priced over whole token sets
/// with the coverage constraint priced too (a Lagrangian relaxation of "every expert somewhere").
/// <para>
/// Per server and layer (a <see cref="Column"/>), the experts are ordered by the server's activations; holding a set
/// costs the server's history requests a modelled time over their whole token sets: a decode step pays a round trip
/// unless all its experts are local, and a prompt one round trip; both pay their remote rows (a token's hidden state and
/// one row per remote expert, as the bus sends them). At a price per slot, each server in turn picks one option per layer
/// by an exact knapsack: a prefix of its order (paying for the experts it leaves uncovered given the other servers'
/// choices) or the experts no other server holds plus a prefix (covering the layer). Two sweeps over the servers per
/// price, on a grid of prices; of the prices' layouts, the one the <see cref="LatencyModel"/> itself models fastest on
/// the history wins.
/// </para>
/// </summary>
internal sealed class LayerSlotPlanner
{
    private const int Sweeps = 2;
    private static readonly int[] PriceHalvings = [5, 6, 7, 8, 9, 10, 11, 12];

    private readonly PlacementProblem _problem;
    private readonly int _servers;
    private readonly int _layers;
    private readonly int _experts;
    private readonly int _words;
    private readonly int[] _slots;
    private readonly Column[,] _columns;

    private LayerSlotPlanner(PlacementProblem problem, CancellationToken cancellationToken)
    {
        _problem = problem;
        _servers = problem.Cluster.Count;
        _layers = problem.Model.Layers;
        _experts = problem.Model.Experts;
        _words = (_experts + 63) / 64;
        _slots = problem.Slots();
        _columns = new Column[_servers, _layers];
        var byServer = Enumerable.Range(0, _servers).Select(n => problem.History!.Requests.Where(r => r.Server == n).ToList()).ToArray();
        Parallel.For(
            0,
            _servers * _layers,
            new ParallelOptions { CancellationToken = cancellationToken },
            job => _columns[job / _layers, job % _layers] = new Column(problem, job / _layers, job % _layers, byServer[job / _layers]));
    }

    /// <summary>
    /// A placement within every budget that covers every expert, or null when no price gave one. Once
    /// <paramref name="spent"/> returns true, prices not yet tried are skipped if one layout has been found.
    /// </summary>
    public static ExpertPlacement? Plan(PlacementProblem problem, Func<bool> spent, CancellationToken cancellationToken) =>
        new LayerSlotPlanner(problem, cancellationToken).Build(spent, cancellationToken);

    private ExpertPlacement? Build(Func<bool> spent, CancellationToken cancellationToken)
    {
        var high = 0.0;
        foreach (var column in _columns)
        {
            high = Math.Max(high, column.PrefixCost[0]);
        }

        var results = new (double Cost, ulong[][][]? Sets)[PriceHalvings.Length];
        var found = 0;
        Parallel.For(
            0,
            PriceHalvings.Length,
            new ParallelOptions { CancellationToken = cancellationToken },
            i =>
            {
                if (Volatile.Read(ref found) > 0 && spent())
                {
                    results[i] = (double.MaxValue, null);
                    return;
                }

                results[i] = Descend(high / Math.Pow(2, PriceHalvings[i]), cancellationToken);
                if (results[i].Sets is not null)
                {
                    Interlocked.Increment(ref found);
                }
            });
        if (found == 0)
        {
            return null;
        }

        // The knapsack prices each server's sets alone; the model prices how the others' sets spread its rows over the
        // links, so every price's layout is judged by the model on the history.
        var layouts = results.Where(r => r.Sets is not null).Select(r => Layout(r.Sets!)).ToArray();
        var modelled = new double[layouts.Length];
        Parallel.For(
            0,
            layouts.Length,
            new ParallelOptions { CancellationToken = cancellationToken },
            i => modelled[i] = new LatencyModel(_problem.Model, _problem.Cluster, _problem.Latency).MeanLatencyMsWithoutQueueing(layouts[i], _problem.History!));
        return layouts[Array.IndexOf(modelled, modelled.Min())];
    }

    private ExpertPlacement Layout(ulong[][][] sets)
    {
        var placement = new ExpertPlacement(_servers, _layers, _experts);
        for (var n = 0; n < _servers; n++)
        {
            for (var l = 0; l < _layers; l++)
            {
                for (var e = 0; e < _experts; e++)
                {
                    if (Has(sets[n][l], e))
                    {
                        placement.Add(n, l, e);
                    }
                }
            }
        }

        Cover(placement);
        FillFreeSlots(placement);
        return placement;
    }

    /// <summary>
    /// Block coordinate descent at one price per slot: each server in turn (most remote time first) picks its option
    /// per layer given the others' current sets. Returns null sets when no server can shrink to make room for coverage.
    /// </summary>
    private (double Cost, ulong[][][]? Sets) Descend(double price, CancellationToken cancellationToken)
    {
        var sets = new ulong[_servers][][];
        var costs = new double[_servers][];
        for (var n = 0; n < _servers; n++)
        {
            sets[n] = new ulong[_layers][];
            costs[n] = new double[_layers];
            for (var l = 0; l < _layers; l++)
            {
                sets[n][l] = new ulong[_words];
            }
        }

        var order = Enumerable.Range(0, _servers)
            .OrderByDescending(n => Enumerable.Range(0, _layers).Sum(l => _columns[n, l].PrefixCost[0]))
            .ThenBy(n => n)
            .ToArray();
        for (var sweep = 0; sweep < Sweeps; sweep++)
        {
            foreach (var n in order)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var options = ServerOptions(sets, n, price);
                var chosen = Knapsack(options, _slots[n]);
                for (var l = 0; l < _layers; l++)
                {
                    sets[n][l] = chosen[l].Set;
                    costs[n][l] = chosen[l].Seconds;
                }
            }
        }

        // Too few slots left for the experts nobody holds: the server that loses least per slot of deficit shrinks.
        for (var deficit = Deficit(sets); deficit > 0; deficit = Deficit(sets))
        {
            cancellationToken.ThrowIfCancellationRequested();
            var best = (Server: -1, Score: double.MaxValue, Chosen: Array.Empty<Option>());
            for (var n = 0; n < _servers; n++)
            {
                var used = sets[n].Sum(PopCount);
                if (used == 0)
                {
                    continue;
                }

                var chosen = Knapsack(ServerOptions(sets, n, price), (int)Math.Max(0, used - deficit));
                var saved = sets[n];
                sets[n] = chosen.Select(o => o.Set).ToArray();
                var gained = deficit - Deficit(sets);
                sets[n] = saved;
                var loss = chosen.Sum(o => o.Seconds) - costs[n].Sum();
                if (gained > 0 && loss / gained < best.Score)
                {
                    best = (n, loss / gained, chosen);
                }
            }

            if (best.Server < 0)
            {
                return (double.MaxValue, null);
            }

            sets[best.Server] = best.Chosen.Select(o => o.Set).ToArray();
            costs[best.Server] = best.Chosen.Select(o => o.Seconds).ToArray();
        }

        return (costs.Sum(c => c.Sum()), sets);
    }

    private Option[][] ServerOptions(ulong[][][] sets, int n, double price)
    {
        var others = new ulong[_words];
        var options = new Option[_layers][];
        for (var l = 0; l < _layers; l++)
        {
            Array.Clear(others);
            for (var m = 0; m < _servers; m++)
            {
                if (m != n)
                {
                    Or(others, sets[m][l]);
                }
            }

            options[l] = _columns[n, l].Options(others, price);
        }

        return options;
    }

    /// <summary>Slots used plus experts on no server, minus all slots: how many slots coverage lacks.</summary>
    private long Deficit(ulong[][][] sets)
    {
        var union = new ulong[_words];
        var used = 0L;
        var covered = 0L;
        for (var l = 0; l < _layers; l++)
        {
            Array.Clear(union);
            for (var n = 0; n < _servers; n++)
            {
                Or(union, sets[n][l]);
                used += PopCount(sets[n][l]);
            }

            covered += PopCount(union);
        }

        return used + ((long)_layers * _experts) - covered - _slots.Sum(s => (long)s);
    }

    /// <summary>Exact multiple-choice knapsack: one option per layer (each layer's options by slots, ascending), least total cost within the capacity.</summary>
    internal static Option[] Knapsack(Option[][] options, int capacity)
    {
        var layers = options.Length;
        var value = new double[capacity + 1];
        var next = new double[capacity + 1];
        var choice = new int[layers, capacity + 1];
        for (var l = 0; l < layers; l++)
        {
            var layerOptions = options[l];
            for (var c = 0; c <= capacity; c++)
            {
                var best = double.MaxValue;
                var bestIndex = -1;
                for (var i = 0; i < layerOptions.Length && layerOptions[i].Slots <= c; i++)
                {
                    var v = value[c - layerOptions[i].Slots] + layerOptions[i].Priced;
                    if (v < best)
                    {
                        best = v;
                        bestIndex = i;
                    }
                }

                next[c] = best;
                choice[l, c] = bestIndex;
            }

            (value, next) = (next, value);
        }

        var chosen = new Option[layers];
        var left = capacity;
        for (var l = layers - 1; l >= 0; l--)
        {
            chosen[l] = options[l][choice[l, left]];
            left -= chosen[l].Slots;
        }

        return chosen;
    }

    private void Cover(ExpertPlacement placement)
    {
        var f = _problem.Activations;
        var used = Enumerable.Range(0, _servers).Select(placement.Count).ToArray();
        for (var l = 0; l < _layers; l++)
        {
            for (var e = 0; e < _experts; e++)
            {
                if (placement.Replicas(l, e) > 0)
                {
                    continue;
                }

                var host = -1;
                for (var n = 0; n < _servers; n++)
                {
                    if (used[n] < _slots[n] && (host < 0 || f[n, l, e] > f[host, l, e]))
                    {
                        host = n;
                    }
                }

                placement.Add(host, l, e);
                used[host]++;
            }
        }
    }

    private void FillFreeSlots(ExpertPlacement placement)
    {
        var f = _problem.Activations;
        for (var n = 0; n < _servers; n++)
        {
            var server = n;
            var free = _slots[n] - placement.Count(n);
            var missing = Enumerable.Range(0, _layers * _experts)
                .Where(i => !placement.Holds(server, i / _experts, i % _experts))
                .OrderByDescending(i => f[server, i / _experts, i % _experts])
                .ThenBy(i => i)
                .Take(free)
                .ToList();
            foreach (var i in missing)
            {
                placement.Add(n, i / _experts, i % _experts);
            }
        }
    }

    private static bool Has(ulong[] set, int e) => (set[e >> 6] & (1UL << (e & 63))) != 0;

    private static void Or(ulong[] into, ulong[] from)
    {
        for (var w = 0; w < into.Length; w++)
        {
            into[w] |= from[w];
        }
    }

    private static int PopCount(ulong[] set)
    {
        var count = 0;
        foreach (var word in set)
        {
            count += BitOperations.PopCount(word);
        }

        return count;
    }

    /// <summary>One way a server can hold a layer: the set, its slots, its modelled seconds, and seconds plus price.</summary>
    internal readonly record struct Option(ulong[] Set, int Slots, double Seconds, double Priced);

    /// <summary>One server's tokens in one layer, its expert order and the modelled time of holding a set.</summary>
    internal sealed class Column
    {
        private readonly int _experts;
        private readonly int _words;
        private readonly int _tokens;
        private readonly ulong[] _tokenSets;
        private readonly bool[] _decoded;
        private readonly int[] _request;
        private readonly int _requests;
        private readonly int[][] _byExpert;
        private readonly double _rtt;
        private readonly double _perRow;
        private readonly double _localDecode;
        private readonly double _remoteDecode;
        private readonly ulong[][] _prefix;

        public Column(PlacementProblem problem, int server, int layer, List<TraceRequest> requests)
        {
            var model = problem.Model;
            var k = model.TopK;
            _experts = model.Experts;
            _words = (_experts + 63) / 64;
            _requests = requests.Count;
            for (var s = 0; s < problem.Cluster.Count; s++)
            {
                if (s != server)
                {
                    var link = problem.Cluster.Link(server, s);
                    _rtt = Math.Max(_rtt, link.RttSeconds);
                    _perRow = Math.Max(_perRow, model.HiddenBytes / link.BytesPerSecond);
                }
            }

            // A remote step sends at least one message, priced as if it carried all the rows: the bus's work is part of its cost.
            _rtt += problem.Latency.MessageSeconds;
            _perRow += model.HiddenBytes * problem.Latency.MessageByteSeconds;
            var expertSeconds = Enumerable.Range(0, _experts).Average(e => model.Bytes(layer, e)) / problem.Cluster.Servers[server].MemoryBytesPerSecond;
            _localDecode = k * expertSeconds;
            _remoteDecode = _rtt + _perRow + _localDecode;

            _tokens = requests.Sum(r => r.Tokens);
            _tokenSets = new ulong[_tokens * _words];
            _decoded = new bool[_tokens];
            _request = new int[_tokens];
            var byExpert = Enumerable.Range(0, _experts).Select(_ => new List<int>()).ToArray();
            var t = 0;
            for (var r = 0; r < requests.Count; r++)
            {
                var (prompt, _) = problem.Latency.Split(requests[r].Tokens);
                var ids = requests[r].Experts[layer];
                for (var i = 0; i < requests[r].Tokens; i++, t++)
                {
                    for (var j = 0; j < k; j++)
                    {
                        var e = ids[(i * k) + j];
                        if (!TokenHas(t, e))
                        {
                            _tokenSets[(t * _words) + (e >> 6)] |= 1UL << (e & 63);
                            byExpert[e].Add(t);
                        }
                    }

                    _decoded[t] = i >= prompt;
                    _request[t] = r;
                }
            }

            _byExpert = byExpert.Select(b => b.ToArray()).ToArray();
            Order = [.. Enumerable.Range(0, _experts).OrderByDescending(e => problem.Activations[server, layer, e]).ThenBy(e => e)];
            _prefix = new ulong[_experts + 1][];
            _prefix[0] = new ulong[_words];
            for (var i = 0; i < _experts; i++)
            {
                _prefix[i + 1] = (ulong[])_prefix[i].Clone();
                _prefix[i + 1][Order[i] >> 6] |= 1UL << (Order[i] & 63);
            }

            PrefixCost = Curve(new ulong[_words]).Seconds;
        }

        /// <summary>
        /// The experts, most activated by the server first. (An order by the tokens an expert completes fitted the
        /// history's token sets better but did no better on other requests, and worse on small samples.)
        /// </summary>
        public int[] Order { get; }

        /// <summary>Modelled seconds when holding the first k experts of <see cref="Order"/>, k = 0..E.</summary>
        public double[] PrefixCost { get; }

        /// <summary>
        /// The options at a price per slot given the experts the other servers hold: every prefix (priced for its slots
        /// and the experts it leaves on no server), and every prefix joined to the experts no other server holds.
        /// </summary>
        public Option[] Options(ulong[] others, double price)
        {
            var options = new List<Option>(2 * (_experts + 1));
            var union = new ulong[_words];
            for (var i = 0; i <= _experts; i++)
            {
                for (var w = 0; w < _words; w++)
                {
                    union[w] = others[w] | _prefix[i][w];
                }

                var uncovered = _experts - PopCount(union);
                options.Add(new Option(_prefix[i], i, PrefixCost[i], PrefixCost[i] + (price * (i + uncovered))));
            }

            var gap = new ulong[_words];
            for (var w = 0; w < _words; w++)
            {
                gap[w] = ~others[w];
            }

            if (_experts % 64 != 0)
            {
                gap[^1] &= (1UL << (_experts % 64)) - 1;
            }

            if (PopCount(gap) > 0)
            {
                var (sets, seconds) = Curve(gap);
                for (var i = 0; i <= _experts; i++)
                {
                    var slots = PopCount(sets[i]);
                    if (i == 0 || slots != PopCount(sets[i - 1]))
                    {
                        options.Add(new Option(sets[i], slots, seconds[i], seconds[i] + (price * slots)));
                    }
                }
            }

            // Pareto front by slots: an option with more slots that costs no less is never chosen.
            options.Sort((a, b) => a.Slots != b.Slots ? a.Slots.CompareTo(b.Slots) : a.Priced.CompareTo(b.Priced));
            var front = new List<Option>(options.Count);
            foreach (var option in options)
            {
                if (front.Count == 0 || option.Priced < front[^1].Priced)
                {
                    front.Add(option);
                }
            }

            return [.. front];
        }

        /// <summary>The sets "forced plus the first k of the order" and their modelled seconds, k = 0..E.</summary>
        private (ulong[][] Sets, double[] Seconds) Curve(ulong[] forced)
        {
            var held = (ulong[])forced.Clone();
            var missing = new int[_tokens];
            var remoteDecode = 0;
            var decodeMissing = 0;
            var remotePrompt = new int[_requests];
            var promptMissing = new int[_requests];
            for (var t = 0; t < _tokens; t++)
            {
                for (var w = 0; w < _words; w++)
                {
                    missing[t] += BitOperations.PopCount(_tokenSets[(t * _words) + w] & ~held[w]);
                }

                if (missing[t] > 0)
                {
                    if (_decoded[t])
                    {
                        remoteDecode++;
                        decodeMissing += missing[t];
                    }
                    else
                    {
                        remotePrompt[_request[t]]++;
                        promptMissing[_request[t]] += missing[t];
                    }
                }
            }

            var decodeTokens = _decoded.Count(d => d);
            // A prompt's rows priced as if on one link: a layer another server holds whole sends them all there.
            double Prompt(int r) => remotePrompt[r] == 0 ? 0 : _rtt + ((remotePrompt[r] + promptMissing[r]) * _perRow);
            var promptSeconds = Enumerable.Range(0, _requests).Sum(Prompt);
            double Seconds() => (remoteDecode * _remoteDecode) + (decodeMissing * _perRow) + ((decodeTokens - remoteDecode) * _localDecode) + promptSeconds;

            var sets = new ulong[_experts + 1][];
            var seconds = new double[_experts + 1];
            sets[0] = (ulong[])held.Clone();
            seconds[0] = Seconds();
            for (var i = 0; i < _experts; i++)
            {
                var e = Order[i];
                if (!Has(held, e))
                {
                    held[e >> 6] |= 1UL << (e & 63);
                    foreach (var t in _byExpert[e])
                    {
                        var last = --missing[t] == 0;
                        if (_decoded[t])
                        {
                            decodeMissing--;
                            remoteDecode -= last ? 1 : 0;
                        }
                        else
                        {
                            var r = _request[t];
                            promptSeconds -= Prompt(r);
                            promptMissing[r]--;
                            remotePrompt[r] -= last ? 1 : 0;
                            promptSeconds += Prompt(r);
                        }
                    }

                    sets[i + 1] = (ulong[])held.Clone();
                }
                else
                {
                    sets[i + 1] = sets[i];
                }

                seconds[i + 1] = Seconds();
            }

            return (sets, seconds);
        }

        private bool TokenHas(int token, int e) => (_tokenSets[(token * _words) + (e >> 6)] & (1UL << (e & 63))) != 0;
    }
}
