using System.Numerics;

namespace DanceMoE.Placement;

/// <summary>
/// Project selection by minimum cut: projects with profits, each needing a set of experts (at most 64, one bit each),
/// every expert costing the same price. Which experts to buy so that the profit of the projects they complete, less
/// their price, is largest. Exact (Dinic's max flow: source -> project -> its experts -> sink).
/// </summary>
internal sealed class MaxClosure
{
    private readonly int _experts;
    private readonly ulong[] _needs;
    private readonly double[] _profits;

    public MaxClosure(int experts, IReadOnlyList<(ulong Needs, double Profit)> projects)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(experts, 64);
        _experts = experts;
        var merged = new Dictionary<ulong, double>();
        foreach (var (needs, profit) in projects)
        {
            if (profit > 0)
            {
                merged[needs] = merged.GetValueOrDefault(needs) + profit;
            }
        }

        _needs = [.. merged.Keys];
        _profits = [.. merged.Values];
    }

    public double TotalProfit => _profits.Sum();

    /// <summary>The largest (profit of completed projects - price x experts bought), and the experts bought (the smallest such set).</summary>
    public (double Value, ulong Bought) Solve(double price)
    {
        var prices = new double[_experts];
        Array.Fill(prices, price);
        return Solve(prices);
    }

    /// <summary>As <see cref="Solve(double)"/> with a price per expert; an expert of negative price is always bought.</summary>
    public (double Value, ulong Bought) Solve(ReadOnlySpan<double> prices)
    {
        var projects = _needs.Length;
        var source = projects + _experts;
        var sink = source + 1;
        var graph = new FlowGraph(sink + 1);
        for (var p = 0; p < projects; p++)
        {
            graph.Add(source, p, _profits[p]);
            for (var needs = _needs[p]; needs != 0; needs &= needs - 1)
            {
                graph.Add(p, projects + BitOperations.TrailingZeroCount(needs), double.PositiveInfinity);
            }
        }

        var free = 0.0;
        for (var e = 0; e < _experts; e++)
        {
            graph.Add(projects + e, sink, Math.Max(0, prices[e]));
            free += Math.Max(0, -prices[e]);
        }

        var flow = graph.MaxFlow(source, sink);
        var reachable = graph.Reachable(source);
        var bought = 0UL;
        for (var e = 0; e < _experts; e++)
        {
            if (reachable[projects + e] || prices[e] < 0)
            {
                bought |= 1UL << e;
            }
        }

        return (TotalProfit - flow + free, bought);
    }

    private sealed class FlowGraph(int nodes)
    {
        private const double Epsilon = 1e-12;
        private readonly List<int>[] _out = [.. Enumerable.Range(0, nodes).Select(_ => new List<int>())];
        private readonly List<int> _to = [];
        private readonly List<double> _capacity = [];

        public void Add(int from, int to, double capacity)
        {
            _out[from].Add(_to.Count);
            _to.Add(to);
            _capacity.Add(capacity);
            _out[to].Add(_to.Count);
            _to.Add(from);
            _capacity.Add(0);
        }

        public double MaxFlow(int source, int sink)
        {
            var flow = 0.0;
            var level = new int[nodes];
            var next = new int[nodes];
            while (Levels(source, sink, level))
            {
                Array.Clear(next);
                double pushed;
                while ((pushed = Push(source, sink, double.PositiveInfinity, level, next)) > Epsilon)
                {
                    flow += pushed;
                }
            }

            return flow;
        }

        public bool[] Reachable(int source)
        {
            var seen = new bool[nodes];
            var queue = new Queue<int>([source]);
            seen[source] = true;
            while (queue.TryDequeue(out var node))
            {
                foreach (var edge in _out[node])
                {
                    if (_capacity[edge] > Epsilon && !seen[_to[edge]])
                    {
                        seen[_to[edge]] = true;
                        queue.Enqueue(_to[edge]);
                    }
                }
            }

            return seen;
        }

        private bool Levels(int source, int sink, int[] level)
        {
            Array.Fill(level, -1);
            level[source] = 0;
            var queue = new Queue<int>([source]);
            while (queue.TryDequeue(out var node))
            {
                foreach (var edge in _out[node])
                {
                    if (_capacity[edge] > Epsilon && level[_to[edge]] < 0)
                    {
                        level[_to[edge]] = level[node] + 1;
                        queue.Enqueue(_to[edge]);
                    }
                }
            }

            return level[sink] >= 0;
        }

        private double Push(int node, int sink, double limit, int[] level, int[] next)
        {
            if (node == sink)
            {
                return limit;
            }

            for (; next[node] < _out[node].Count; next[node]++)
            {
                var edge = _out[node][next[node]];
                var to = _to[edge];
                if (_capacity[edge] <= Epsilon || level[to] != level[node] + 1)
                {
                    continue;
                }

                var pushed = Push(to, sink, Math.Min(limit, _capacity[edge]), level, next);
                if (pushed > Epsilon)
                {
                    _capacity[edge] -= pushed;
                    _capacity[edge ^ 1] += pushed;
                    return pushed;
                }
            }

            return 0;
        }
    }
}
