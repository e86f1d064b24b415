namespace DanceMoE.Placement;

/// <summary>
/// Seeded synthetic routing for tests and solve-time benchmarks: every server has its own skewed (Zipf-like)
/// preference over the experts of each layer, as domain-specific workloads do; tokens draw k distinct experts from it.
/// </summary>
public static class SyntheticWorkload
{
    public static Workload Generate(
        int seed, int servers, MoeModel model, int requestsPerServer, int tokensPerRequest, double skew = 1.0, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        var random = new Random(seed);
        var weights = new double[servers][][];
        var totals = new double[servers][];
        for (var n = 0; n < servers; n++)
        {
            weights[n] = new double[model.Layers][];
            totals[n] = new double[model.Layers];
            for (var l = 0; l < model.Layers; l++)
            {
                var order = Enumerable.Range(0, model.Experts).OrderBy(_ => random.Next()).ToArray();
                var w = new double[model.Experts];
                for (var r = 0; r < order.Length; r++)
                {
                    w[order[r]] = 1.0 / Math.Pow(r + 1, skew);
                }

                weights[n][l] = w;
                totals[n][l] = w.Sum();
            }
        }

        var requests = new List<TraceRequest>();
        for (var n = 0; n < servers; n++)
        {
            for (var i = 0; i < requestsPerServer; i++)
            {
                var experts = new int[model.Layers][];
                for (var l = 0; l < model.Layers; l++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    experts[l] = new int[tokensPerRequest * model.TopK];
                    for (var t = 0; t < tokensPerRequest; t++)
                    {
                        Draw(random, weights[n][l], totals[n][l], experts[l].AsSpan(t * model.TopK, model.TopK));
                    }
                }

                requests.Add(new TraceRequest(n, tokensPerRequest, experts));
            }
        }

        return new Workload(requests);
    }

    private static void Draw(Random random, double[] weights, double total, Span<int> into)
    {
        for (var j = 0; j < into.Length; j++)
        {
            int pick;
            do
            {
                var x = random.NextDouble() * total;
                pick = 0;
                while (pick < weights.Length - 1 && x >= weights[pick])
                {
                    x -= weights[pick];
                    pick++;
                }
            }
            while (into[..j].Contains(pick));

            into[j] = pick;
        }
    }
}
