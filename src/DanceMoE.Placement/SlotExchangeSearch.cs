namespace DanceMoE.Placement;

/// <summary>
/// Local search on the latency model itself over every layer at once: a server gives up a replica in one layer (or a
/// free slot) for an expert in the same or another layer when the history's requests model faster, and drops a replica
/// outright when that alone is faster (a spare replica can split a step's experts over more peers, each paying a
/// message). Every (server, expert) toggle of every layer is priced by <see cref="LayerSteps"/>, whose table of toggles
/// is kept exact after each move by pricing again only the steps that use the moved expert; so the search runs until no
/// move helps, and its result does not depend on the machine's speed unless <c>spent</c> stops it first.
/// </summary>
internal static class SlotExchangeSearch
{
    private const double Epsilon = 1e-9;

    /// <summary>How many of a server's best adds are tried, each with its best drop, before the server has no move.</summary>
    private const int AddsTried = 8;

    /// <summary>How many of those adds are also tried with a drop in their own layer (made, then undone when no drop pays).</summary>
    private const int SameLayerTries = 2;

    /// <summary>How many drops a move checks against the model before giving up (entries of stale tables prove wrong).</summary>
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
        private readonly bool[] _distrusted;

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
            _distrusted = new bool[_layers * _servers * _experts];
            Parallel.For(
                0,
                _layers,
                new ParallelOptions { CancellationToken = cancellationToken },
                l =>
                {
                    _holds[l] = Enumerable.Range(0, _servers).Select(s => placement.LayerBits(s, l)[0]).ToArray();
                    _steps[l].Track(_holds[l]);
                });
        }

        public void Run(Func<bool> spent)
        {
            // Passes run on the tables as they are (a move is checked against fresh prices first); once a pass finds no move, the
            // prompts' stale shares are priced again, and a pass without a move on exact tables ends the search (the moves it
            // tried and undid left the holdings as they were).
            while (!spent())
            {
                var exact = !_steps.Any(steps => steps.Stale);
                var moved = false;
                for (var s = 0; s < _servers; s++)
                {
                    while (!spent() && Move(s))
                    {
                        moved = true;
                    }
                }

                if (!moved && exact)
                {
                    break;
                }

                if (!moved)
                {
                    Array.Clear(_distrusted);
                    var stale = Enumerable.Range(0, _layers).Where(l => _steps[l].Stale).ToArray();
                    Parallel.ForEach(stale, new ParallelOptions { CancellationToken = _cancellationToken }, l => _steps[l].Refresh(_holds[l]));
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

        /// <summary>One move of server <paramref name="s"/> that makes the history model faster; false when it has none.</summary>
        private bool Move(int s)
        {
            _cancellationToken.ThrowIfCancellationRequested();
            for (var attempt = 0; attempt < Checks; attempt++)
            {
                var drop = BestDrop(s);
                if (drop.Layer < 0 || drop.Delta >= -Epsilon)
                {
                    break;
                }

                if (Exact(drop.Layer, s, drop.Expert) < -Epsilon)
                {
                    Toggle(drop.Layer, s, drop.Expert);
                    return true;
                }

                Distrust(drop.Layer, s, drop.Expert);
            }

            var adds = Adds(s);
            var free = _used[s] < _slots[s];
            foreach (var add in adds)
            {
                var added = Exact(add.Layer, s, add.Expert);
                if (added >= -Epsilon)
                {
                    Distrust(add.Layer, s, add.Expert);
                    continue;
                }

                // A drop in another layer prices apart from the add.
                var other = free ? default : DropOutside(s, add.Layer, added);
                if (free || other.Layer >= 0)
                {
                    Toggle(add.Layer, s, add.Expert);
                    if (!free)
                    {
                        Toggle(other.Layer, s, other.Expert);
                    }

                    return true;
                }
            }

            // A drop in the add's own layer prices with the add made (each changes the other's steps): tried for the best adds only.
            foreach (var add in adds.Take(SameLayerTries).Where(add => !free && !Distrusted(add.Layer, s, add.Expert)))
            {
                var before = _steps[add.Layer].Seconds;
                Toggle(add.Layer, s, add.Expert);
                var added = _steps[add.Layer].Seconds - before;
                var same = BestDrop(s, onlyLayer: add.Layer);
                if (same.Layer >= 0 && added + Exact(same.Layer, s, same.Expert) < -Epsilon)
                {
                    Toggle(same.Layer, s, same.Expert);
                    return true;
                }

                Toggle(add.Layer, s, add.Expert);
            }

            return false;
        }

        /// <summary>Server <paramref name="s"/>'s drop outside <paramref name="addedLayer"/> that, with an add of <paramref name="added"/> seconds, is faster; layer -1 when none.</summary>
        private (int Layer, int Expert, double Delta) DropOutside(int s, int addedLayer, double added)
        {
            for (var attempt = 0; attempt < Checks; attempt++)
            {
                var drop = BestDrop(s, exceptLayer: addedLayer);
                if (drop.Layer < 0 || added + drop.Delta >= -Epsilon)
                {
                    break;
                }

                if (added + Exact(drop.Layer, s, drop.Expert) < -Epsilon)
                {
                    return drop;
                }

                Distrust(drop.Layer, s, drop.Expert);
            }

            return (-1, -1, 0);
        }

        /// <summary>What toggling (server, expert) in layer l changes, priced afresh where the layer's table is stale.</summary>
        private double Exact(int l, int s, int e)
        {
            if (!_steps[l].Stale)
            {
                return _steps[l].Toggle(s, e);
            }

            Span<ulong> trial = stackalloc ulong[_servers];
            _holds[l].CopyTo(trial);
            trial[s] ^= 1UL << e;
            return _steps[l].Delta(e, trial);
        }

        /// <summary>Leaves a toggle whose table entry proved stale out until the tables are priced afresh.</summary>
        private void Distrust(int l, int s, int e) => _distrusted[(((l * _servers) + s) * _experts) + e] = true;

        private bool Distrusted(int l, int s, int e) => _distrusted[(((l * _servers) + s) * _experts) + e];

        /// <summary>Server <paramref name="s"/>'s <see cref="AddsTried"/> best adds that alone make the history faster, best first.</summary>
        private List<(int Layer, int Expert, double Delta)> Adds(int s)
        {
            var adds = new List<(int Layer, int Expert, double Delta)>();
            for (var l = 0; l < _layers; l++)
            {
                for (var e = 0; e < _experts; e++)
                {
                    var delta = _steps[l].Toggle(s, e);
                    if (!Holds(l, s, e) && delta < -Epsilon && !Distrusted(l, s, e))
                    {
                        adds.Add((l, e, delta));
                    }
                }
            }

            adds.Sort((a, b) => a.Delta != b.Delta ? a.Delta.CompareTo(b.Delta) : (a.Layer, a.Expert).CompareTo((b.Layer, b.Expert)));
            return adds.Count > AddsTried ? adds[..AddsTried] : adds;
        }

        /// <summary>Server <paramref name="s"/>'s cheapest drop of an expert another server also holds, in one layer or outside one; layer -1 when none.</summary>
        private (int Layer, int Expert, double Delta) BestDrop(int s, int exceptLayer = -1, int onlyLayer = -1)
        {
            var best = (Layer: -1, Expert: -1, Delta: double.PositiveInfinity);
            for (var l = onlyLayer < 0 ? 0 : onlyLayer; l < (onlyLayer < 0 ? _layers : onlyLayer + 1); l++)
            {
                if (l == exceptLayer)
                {
                    continue;
                }

                for (var e = 0; e < _experts; e++)
                {
                    var delta = _steps[l].Toggle(s, e);
                    if (delta < best.Delta && Holds(l, s, e) && Replicas(l, e) >= 2 && !Distrusted(l, s, e))
                    {
                        best = (l, e, delta);
                    }
                }
            }

            return best;
        }

        private void Toggle(int l, int s, int e)
        {
            _used[s] += Holds(l, s, e) ? -1 : 1;
            _holds[l][s] ^= 1UL << e;
            _steps[l].Apply(e, _holds[l]);
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
