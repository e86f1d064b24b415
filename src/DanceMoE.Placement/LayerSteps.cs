using System.Numerics;

namespace DanceMoE.Placement;

/// <summary>
/// One layer of the history as the <see cref="LatencyModel"/> runs it (without queueing), on 64-bit expert sets so
/// that a search can price thousands of changes: every step (a prompt, or a decoded token; identical decoded tokens of
/// one server merged) is routed by the model's rules. A step's time depends only on who holds its experts, so toggling
/// one (server, expert) is priced by re-running the steps that use that expert. Tests keep it equal to the model.
/// </summary>
internal sealed class LayerSteps
{
    private readonly int _servers;
    private readonly int _experts;
    private readonly double[] _linkFixed;
    private readonly double[] _linkPerRow;
    private readonly LatencyOptions _options;
    private readonly double _hiddenBytes;
    private readonly double[] _memorySeconds;
    private readonly double[] _flopSeconds;
    private readonly Step[] _steps;
    private readonly ulong[] _tokens;
    private readonly int[] _occurrences;
    private readonly int[] _byRows;
    private readonly int[][] _stepsOf;
    private readonly double[] _seconds;
    private readonly int[] _togglesAt;
    private double[]? _toggleTerms;
    private double[]? _toggles;
    private bool[]? _stalePrompts;

    /// <summary>Whether every layer of <paramref name="requests"/> can be priced here: at most 64 experts per layer, no token naming one twice.</summary>
    public static bool CanPrice(MoeModel model, IReadOnlyList<TraceRequest> requests)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(requests);
        return model.Experts <= 64 && requests.All(r => r.Experts.All(ids => ids.Chunk(model.TopK).All(token => token.Distinct().Count() == token.Length)));
    }

    public LayerSteps(PlacementProblem problem, int layer, IReadOnlyList<TraceRequest> requests)
    {
        var (model, cluster, options) = (problem.Model, problem.Cluster, problem.Latency);
        if (model.Experts > 64)
        {
            throw new ArgumentException("layer steps hold at most 64 experts per layer", nameof(problem));
        }

        _servers = cluster.Count;
        _experts = model.Experts;
        _options = options;
        _hiddenBytes = model.HiddenBytes;
        _linkFixed = new double[_servers * _servers];
        _linkPerRow = new double[_servers * _servers];
        for (var a = 0; a < _servers; a++)
        {
            for (var b = 0; b < _servers; b++)
            {
                var link = cluster.Link(a, b);
                _linkFixed[(a * _servers) + b] = link.RttSeconds;
                _linkPerRow[(a * _servers) + b] = model.HiddenBytes / link.BytesPerSecond;
            }
        }

        _memorySeconds = new double[_servers * _experts];
        _flopSeconds = new double[_servers * _experts];
        for (var s = 0; s < _servers; s++)
        {
            for (var e = 0; e < _experts; e++)
            {
                _memorySeconds[(s * _experts) + e] = model.Bytes(layer, e) / cluster.Servers[s].MemoryBytesPerSecond;
                _flopSeconds[(s * _experts) + e] = model.FlopsPerToken(layer, e) / cluster.Servers[s].FlopsPerSecond;
            }
        }

        var k = model.TopK;
        var steps = new List<Step>();
        var tokens = new List<ulong>();
        var occurrences = new List<int>();
        var decoded = new Dictionary<(int Server, ulong Set), int>();
        var occurrence = new int[_experts];
        foreach (var request in requests)
        {
            var (prompt, _) = options.Split(request.Tokens);
            var ids = request.Experts[layer];
            for (var from = 0; from < request.Tokens; from = from < prompt ? prompt : from + 1)
            {
                var count = from < prompt ? prompt : 1;
                var union = 0UL;
                var duplicates = false;
                Array.Clear(occurrence);
                var first = tokens.Count;
                for (var t = from; t < from + count; t++)
                {
                    var set = 0UL;
                    for (var j = 0; j < k; j++)
                    {
                        var e = ids[(t * k) + j];
                        duplicates |= (set & (1UL << e)) != 0;
                        set |= 1UL << e;
                        occurrence[e]++;
                    }

                    tokens.Add(set);
                    union |= set;
                }

                if (duplicates)
                {
                    throw new ArgumentException($"layer {layer}: a token names one expert twice", nameof(requests));
                }

                if (count == 1 && decoded.TryGetValue((request.Server, union), out var merged))
                {
                    steps[merged] = steps[merged] with { Weight = steps[merged].Weight + 1 };
                    tokens.RemoveAt(tokens.Count - 1);
                    continue;
                }

                if (count == 1)
                {
                    decoded[(request.Server, union)] = steps.Count;
                }

                steps.Add(new Step(request.Server, 1, first, count, union, occurrences.Count));
                occurrences.AddRange(occurrence);
            }
        }

        _steps = [.. steps];
        _tokens = [.. tokens];
        _occurrences = [.. occurrences];
        _byRows = new int[_occurrences.Length];
        var stepsOf = Enumerable.Range(0, _experts).Select(_ => new List<int>()).ToArray();
        for (var i = 0; i < _steps.Length; i++)
        {
            // The step's experts by rows, most first, then by id (an insertion sort keeps the ids' order among equals).
            var at = _steps[i].Occurrences;
            var counts = _occurrences.AsSpan(at, _experts);
            var order = _byRows.AsSpan(at, BitOperations.PopCount(_steps[i].Union));
            var n = 0;
            for (var bits = _steps[i].Union; bits != 0; bits &= bits - 1)
            {
                var e = BitOperations.TrailingZeroCount(bits);
                stepsOf[e].Add(i);
                var j = n++;
                for (; j > 0 && counts[order[j - 1]] < counts[e]; j--)
                {
                    order[j] = order[j - 1];
                }

                order[j] = e;
            }
        }

        _stepsOf = [.. stepsOf.Select(list => list.ToArray())];
        _seconds = new double[_steps.Length];
        _togglesAt = new int[_steps.Length + 1];
        for (var i = 0; i < _steps.Length; i++)
        {
            _togglesAt[i + 1] = _togglesAt[i] + (_servers * BitOperations.PopCount(_steps[i].Union));
        }
    }

    /// <summary>Whether <paramref name="steps"/> (one per layer) price <paramref name="placement"/> on <paramref name="history"/> as the <see cref="LatencyModel"/> does without queueing.</summary>
    public static bool PriceAsTheModel(IReadOnlyList<LayerSteps> steps, PlacementProblem problem, ExpertPlacement placement, Workload history)
    {
        ArgumentNullException.ThrowIfNull(steps);
        ArgumentNullException.ThrowIfNull(problem);
        ArgumentNullException.ThrowIfNull(placement);
        ArgumentNullException.ThrowIfNull(history);
        var modelled = new LatencyModel(problem.Model, problem.Cluster, problem.Latency).MeanLatencyMsWithoutQueueing(placement, history) / 1e3 * history.Requests.Count;
        var priced = steps.Select((layer, l) => layer.Price([.. Enumerable.Range(0, placement.Servers).Select(s => placement.LayerBits(s, l)[0])])).Sum();
        return Math.Abs(priced - modelled) <= 1e-9 * Math.Max(1e-3, Math.Abs(modelled));
    }

    /// <summary>The layer's seconds summed over the requests at the holdings last passed to <see cref="Reset"/> or <see cref="Apply"/>.</summary>
    public double Seconds { get; private set; }

    /// <summary>The layer's seconds summed over the requests when the servers hold <paramref name="holds"/> (one expert set each).</summary>
    public double Price(ReadOnlySpan<ulong> holds)
    {
        var total = 0.0;
        for (var i = 0; i < _steps.Length; i++)
        {
            total += StepSeconds(i, holds) * _steps[i].Weight;
        }

        return total;
    }

    /// <summary>Prices every step at <paramref name="holds"/> (one expert set per server) and keeps them as the current holdings' times.</summary>
    public double Reset(ReadOnlySpan<ulong> holds)
    {
        (_toggles, _toggleTerms, _stalePrompts, Stale) = (null, null, null, false);
        var total = 0.0;
        for (var i = 0; i < _steps.Length; i++)
        {
            _seconds[i] = StepSeconds(i, holds);
            total += _seconds[i] * _steps[i].Weight;
        }

        Seconds = total;
        return total;
    }

    /// <summary>
    /// Like <see cref="Reset"/>, and from now on keeps a table of what toggling each (server, expert) changes in the layer's
    /// seconds (<see cref="Toggle"/>), kept up to date by <see cref="Apply"/>: a toggle changes only the steps that use the
    /// expert, so only their share of the table is priced again. A prompt's share is left as it was until
    /// <see cref="Refresh"/> (a prompt uses most experts of a layer and costs far more to price than a decoded token), so
    /// <see cref="Toggle"/> is exact only while <see cref="Stale"/> is false. Dropping an expert's last replica is left at 0.
    /// </summary>
    public double Track(ReadOnlySpan<ulong> holds)
    {
        var total = Reset(holds);
        _toggleTerms = new double[_togglesAt[^1]];
        _toggles = new double[_servers * _experts];
        _stalePrompts = new bool[_steps.Length];
        for (var i = 0; i < _steps.Length; i++)
        {
            PriceToggles(i, holds);
        }

        return total;
    }

    /// <summary>Whether some prompt's share of the toggle table is older than the current holdings.</summary>
    public bool Stale { get; private set; }

    /// <summary>Prices again the prompts' shares of the toggle table that <see cref="Apply"/> left stale, at <paramref name="holds"/> (the current holdings).</summary>
    public void Refresh(ReadOnlySpan<ulong> holds)
    {
        for (var i = 0; i < _steps.Length && Stale; i++)
        {
            if (_stalePrompts![i])
            {
                PriceToggles(i, holds);
                _stalePrompts[i] = false;
            }
        }

        Stale = false;
    }

    /// <summary>What toggling <paramref name="expert"/> on <paramref name="server"/> changes in the layer's seconds at the current holdings (after <see cref="Track"/>).</summary>
    public double Toggle(int server, int expert) =>
        _toggles is null ? throw new InvalidOperationException("the layer is not tracked") : _toggles[(server * _experts) + expert];

    /// <summary>How the layer's seconds change when <paramref name="holds"/> (the current holdings but for <paramref name="expert"/>) replace the current ones.</summary>
    public double Delta(int expert, ReadOnlySpan<ulong> holds)
    {
        var delta = 0.0;
        foreach (var i in _stepsOf[expert])
        {
            delta += (StepSeconds(i, holds) - _seconds[i]) * _steps[i].Weight;
        }

        return delta;
    }

    /// <summary>Makes <paramref name="holds"/>, which differ from the current holdings only in <paramref name="expert"/>, current.</summary>
    public void Apply(int expert, ReadOnlySpan<ulong> holds)
    {
        foreach (var i in _stepsOf[expert])
        {
            var seconds = StepSeconds(i, holds);
            Seconds += (seconds - _seconds[i]) * _steps[i].Weight;
            _seconds[i] = seconds;
            if (_toggles is not null && _steps[i].Tokens == 1)
            {
                PriceToggles(i, holds);
            }
            else if (_toggles is not null)
            {
                (_stalePrompts![i], Stale) = (true, true);
            }
        }
    }

    /// <summary>Prices again what toggling each (server, expert of the step) changes in step <paramref name="index"/>, replacing its share of the table.</summary>
    private void PriceToggles(int index, ReadOnlySpan<ulong> holds)
    {
        var step = _steps[index];
        var terms = _toggleTerms.AsSpan(_togglesAt[index], _togglesAt[index + 1] - _togglesAt[index]);
        Span<ulong> trial = stackalloc ulong[_servers];
        holds.CopyTo(trial);
        var at = 0;
        for (var s = 0; s < _servers; s++)
        {
            for (var bits = step.Union; bits != 0; bits &= bits - 1)
            {
                var e = BitOperations.TrailingZeroCount(bits);
                var bit = 1UL << e;
                var term = 0.0;
                trial[s] ^= bit;

                // Another server's copy of an expert the step's home holds never serves the step.
                if ((s == step.Home || (holds[step.Home] & bit) == 0) && OnSomeServer(trial, bit))
                {
                    term = (StepSeconds(index, trial) - _seconds[index]) * step.Weight;
                }

                trial[s] ^= bit;
                _toggles![(s * _experts) + e] += term - terms[at];
                terms[at++] = term;
            }
        }
    }

    private static bool OnSomeServer(ReadOnlySpan<ulong> holds, ulong bit)
    {
        foreach (var set in holds)
        {
            if ((set & bit) != 0)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>One step as <see cref="LatencyModel"/> routes and times it.</summary>
    private double StepSeconds(int index, ReadOnlySpan<ulong> holds)
    {
        var step = _steps[index];
        var home = step.Home;
        var n = _servers;
        var occurrences = _occurrences.AsSpan(step.Occurrences, _experts);
        Span<double> compute = stackalloc double[n];
        compute.Clear();
        var local = step.Union & holds[home];
        for (var bits = local; bits != 0; bits &= bits - 1)
        {
            compute[home] += ExpertSeconds(home, BitOperations.TrailingZeroCount(bits), occurrences);
        }

        var remote = step.Union & ~holds[home];
        if (remote == 0)
        {
            return compute[home];
        }

        var single = 0UL;
        for (var bits = remote; bits != 0; bits &= bits - 1)
        {
            var e = BitOperations.TrailingZeroCount(bits);
            var replicas = 0;
            for (var s = 0; s < n; s++)
            {
                replicas += s != home && (holds[s] & (1UL << e)) != 0 ? 1 : 0;
            }

            single |= replicas == 1 ? 1UL << e : 0;
            if (replicas == 0)
            {
                throw new InvalidOperationException($"expert {e} is on no server");
            }
        }

        // Experts with one replica first, then those with most rows, then by id; each to the replica that keeps the slowest peer fastest.
        Span<double> cost = stackalloc double[n];
        Span<bool> used = stackalloc bool[n];
        Span<ulong> routed = stackalloc ulong[n];
        cost.Clear();
        used.Clear();
        routed.Clear();
        var byRows = _byRows.AsSpan(step.Occurrences, BitOperations.PopCount(step.Union));
        for (var pass = 0; pass < 2; pass++)
        {
            var group = remote & (pass == 0 ? single : ~single);
            foreach (var e in byRows)
            {
                if ((group & (1UL << e)) == 0)
                {
                    continue;
                }

                var holders = 0UL;
                for (var s = 0; s < n; s++)
                {
                    holders |= ((holds[s] >> e) & 1UL) << s;
                }

                var best = ReplicaChoice.Pick(holders, home, occurrences[e], _linkFixed, _linkPerRow, cost, used);
                routed[best] |= 1UL << e;
                compute[best] += ExpertSeconds(best, e, occurrences);
            }
        }

        var bus = default(StepBusWork);
        bus.Add(0, compute[home]);
        for (var s = 0; s < n; s++)
        {
            if (routed[s] == 0)
            {
                continue;
            }

            // A token's row goes once to each peer it needs; one row comes back per (token, expert), or one for the token
            // when the peer runs all of its experts (their weighted sum).
            var (sent, back) = (1, (step.Union & ~routed[s]) == 0 ? 1 : BitOperations.PopCount(step.Union & routed[s]));
            if (step.Tokens > 1)
            {
                (sent, back) = (0, 0);
                foreach (var token in _tokens.AsSpan(step.First, step.Tokens))
                {
                    var there = BitOperations.PopCount(token & routed[s]);
                    sent += there == 0 ? 0 : 1;
                    back += there == 0 ? 0 : (token & ~routed[s]) == 0 ? 1 : there;
                }
            }

            bus.AddCall(_options, sent, back, _hiddenBytes, _linkFixed[(home * n) + s], _linkPerRow[(home * n) + s], compute[s]);
        }

        return bus.StepSeconds(_options.MessageLanes, _options.SharedHostBus);
    }

    private double ExpertSeconds(int server, int expert, ReadOnlySpan<int> occurrences)
    {
        var slot = (server * _experts) + expert;
        return Math.Max(_memorySeconds[slot], occurrences[expert] * _flopSeconds[slot]);
    }

    /// <summary>A prompt or a decoded token of <see cref="Home"/>, run <see cref="Weight"/> times; its tokens' sets from <see cref="First"/>.</summary>
    private readonly record struct Step(int Home, int Weight, int First, int Tokens, ulong Union, int Occurrences);
}
