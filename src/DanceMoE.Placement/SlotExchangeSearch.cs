namespace DanceMoE.Placement;

/// <summary>
/// Local search on the latency model itself over every layer at once: a server gives up a replica in one layer (or a
/// free slot) for an expert in the same or another layer when the history's requests model faster, and drops a replica outright when
/// that alone is faster (a spare replica can split a step's experts over more peers, each paying a message).
/// Every (server, expert) toggle of every layer is priced by <see cref="LayerSteps"/>; the prices are kept in a table
/// and checked again just before a move, and the layers a move touched are priced afresh in parallel once no move is
/// left in the table.
/// </summary>
internal static class SlotExchangeSearch
{
    private const double Epsilon = 1e-9;
    private const int Checks = 64;

    /// <summary>Improves <paramref name="placement"/> in place until no move helps or <paramref name="spent"/>.</summary>
    public static void Improve(PlacementProblem problem, ExpertPlacement placement, IReadOnlyList<LayerSteps> steps, Func<bool> spent, CancellationToken cancellationToken) =>
        new Search(problem, placement, steps, cancellationToken).Run(spent);

    private sealed class Search
    {
        private readonly ExpertPlacement _placement;
        private readonly CancellationToken _cancellationToken;
        private readonly int _servers;
        private readonly int _layers;
        private readonly int _experts;
        private readonly int[] _slots;
        private readonly int[] _used;
        private readonly IReadOnlyList<LayerSteps> _steps;
        private readonly ulong[][] _holds;
        private readonly double[][] _deltas;
        private readonly bool[] _stale;

        public Search(PlacementProblem problem, ExpertPlacement placement, IReadOnlyList<LayerSteps> steps, CancellationToken cancellationToken)
        {
            _placement = placement;
            _cancellationToken = cancellationToken;
            _servers = placement.Servers;
            _layers = placement.Layers;
            _experts = placement.Experts;
            _slots = problem.Slots();
            _used = Enumerable.Range(0, _servers).Select(placement.Count).ToArray();
            _steps = steps;
            _holds = new ulong[_layers][];
            _deltas = new double[_layers][];
            _stale = Enumerable.Repeat(true, _layers).ToArray();
            Parallel.For(
                0,
                _layers,
                new ParallelOptions { CancellationToken = cancellationToken },
                l =>
                {
                    _holds[l] = Enumerable.Range(0, _servers).Select(s => placement.LayerBits(s, l)[0]).ToArray();
                    _steps[l].Reset(_holds[l]);
                    _deltas[l] = new double[_servers * _experts];
                });
        }

        public void Run(Func<bool> spent)
        {
            while (!spent())
            {
                Reprice();
                var moved = false;
                for (var s = 0; s < _servers && !spent(); s++)
                {
                    while (!spent() && Move(s))
                    {
                        moved = true;
                    }
                }

                if (!moved && !_stale.Any(stale => stale))
                {
                    break;
                }
            }

            for (var l = 0; l < _layers; l++)
            {
                for (var s = 0; s < _servers; s++)
                {
                    for (var e = 0; e < _experts; e++)
                    {
                        if (Holds(l, s, e))
                        {
                            _placement.Add(s, l, e);
                        }
                        else
                        {
                            _placement.Remove(s, l, e);
                        }
                    }
                }
            }
        }

        /// <summary>Prices every toggle of the layers changed since they were last priced.</summary>
        private void Reprice()
        {
            var stale = Enumerable.Range(0, _layers).Where(l => _stale[l]).ToArray();
            Parallel.ForEach(
                stale,
                new ParallelOptions { CancellationToken = _cancellationToken },
                l =>
                {
                    for (var s = 0; s < _servers; s++)
                    {
                        for (var e = 0; e < _experts; e++)
                        {
                            _deltas[l][(s * _experts) + e] = Price(l, s, e);
                        }
                    }

                    _stale[l] = false;
                });
        }

        /// <summary>One improving move of server <paramref name="s"/>, checked against the model before it is made; false when the table has none.</summary>
        private bool Move(int s)
        {
            for (var check = 0; check < Checks; check++)
            {
                _cancellationToken.ThrowIfCancellationRequested();
                var add = Best(s, adding: true, exceptLayer: -1);
                var drop = Best(s, adding: false, exceptLayer: -1);
                var free = _used[s] < _slots[s];
                var addGain = add.Layer < 0 ? 0 : _deltas[add.Layer][(s * _experts) + add.Expert];
                var dropGain = drop.Layer < 0 ? 0 : _deltas[drop.Layer][(s * _experts) + drop.Expert];
                if (drop.Layer >= 0 && dropGain < -Epsilon)
                {
                    if (Confirm(drop.Layer, s, drop.Expert))
                    {
                        Toggle(drop.Layer, s, drop.Expert);
                        return true;
                    }

                    continue;
                }

                if (add.Layer < 0 || addGain >= -Epsilon)
                {
                    return false;
                }

                if (free)
                {
                    if (Confirm(add.Layer, s, add.Expert))
                    {
                        Toggle(add.Layer, s, add.Expert);
                        return true;
                    }

                    continue;
                }

                if (drop.Layer == add.Layer)
                {
                    if (SwapWithin(add.Layer, s, add.Expert, drop.Expert))
                    {
                        return true;
                    }

                    drop = Best(s, adding: false, exceptLayer: add.Layer);
                }

                if (drop.Layer < 0)
                {
                    return false;
                }

                dropGain = _deltas[drop.Layer][(s * _experts) + drop.Expert];

                if (addGain + dropGain >= -Epsilon)
                {
                    return false;
                }

                if (Confirm(add.Layer, s, add.Expert) & Confirm(drop.Layer, s, drop.Expert)
                    && _deltas[add.Layer][(s * _experts) + add.Expert] + _deltas[drop.Layer][(s * _experts) + drop.Expert] < -Epsilon)
                {
                    Toggle(add.Layer, s, add.Expert);
                    Toggle(drop.Layer, s, drop.Expert);
                    return true;
                }
            }

            return false;
        }

        /// <summary>Adds and drops in one layer, priced together (each changes the other's steps); undone unless faster.</summary>
        private bool SwapWithin(int l, int s, int add, int drop)
        {
            var (before, stale) = (_steps[l].Seconds, _stale[l]);
            Toggle(l, s, add);
            var dropDelta = Price(l, s, drop);
            if (_steps[l].Seconds + dropDelta < before - Epsilon)
            {
                Toggle(l, s, drop);
                return true;
            }

            Toggle(l, s, add);
            _stale[l] = stale;
            return false;
        }

        /// <summary>The table's best add (or drop) of server <paramref name="s"/> outside <paramref name="exceptLayer"/>; layer -1 when none.</summary>
        private (int Layer, int Expert) Best(int s, bool adding, int exceptLayer)
        {
            var best = (Layer: -1, Expert: -1);
            var bestDelta = double.MaxValue;
            for (var l = 0; l < _layers; l++)
            {
                if (l == exceptLayer)
                {
                    continue;
                }

                var deltas = _deltas[l].AsSpan(s * _experts, _experts);
                for (var e = 0; e < _experts; e++)
                {
                    if (deltas[e] < bestDelta && Holds(l, s, e) != adding)
                    {
                        (best, bestDelta) = ((l, e), deltas[e]);
                    }
                }
            }

            return best;
        }

        /// <summary>Prices the toggle again at the current layout; true when the table had it right.</summary>
        private bool Confirm(int l, int s, int e)
        {
            var fresh = Price(l, s, e);
            var known = _deltas[l][(s * _experts) + e];
            _deltas[l][(s * _experts) + e] = fresh;
            return Math.Abs(fresh - known) <= Epsilon;
        }

        /// <summary>What toggling (server, expert) in layer l changes in the layer's seconds; +infinity for a drop that would leave it on no server.</summary>
        private double Price(int l, int s, int e)
        {
            var holds = _holds[l];
            if (Holds(l, s, e) && Replicas(l, e) < 2)
            {
                return double.PositiveInfinity;
            }

            Span<ulong> trial = stackalloc ulong[_servers];
            holds.CopyTo(trial);
            trial[s] ^= 1UL << e;
            return _steps[l].Delta(e, trial);
        }

        private void Toggle(int l, int s, int e)
        {
            _used[s] += Holds(l, s, e) ? -1 : 1;
            _holds[l][s] ^= 1UL << e;
            _steps[l].Apply(e, _holds[l]);
            _stale[l] = true;
        }

        private bool Holds(int l, int s, int e) => (_holds[l][s] & (1UL << e)) != 0;

        private int Replicas(int l, int e)
        {
            var count = 0;
            foreach (var set in _holds[l])
            {
                count += (int)((set >> e) & 1);
            }

            return count;
        }
    }
}
