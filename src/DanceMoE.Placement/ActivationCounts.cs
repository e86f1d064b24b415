namespace DanceMoE.Placement;

/// <summary>How often each server's requests activate each (layer, expert): f[server][layer][expert].</summary>
public sealed class ActivationCounts
{
    private readonly double[] _values;

    public ActivationCounts(int servers, int layers, int experts)
    {
        Servers = servers;
        Layers = layers;
        Experts = experts;
        _values = new double[servers * layers * experts];
    }

    public int Servers { get; }

    public int Layers { get; }

    public int Experts { get; }

    public double this[int server, int layer, int expert]
    {
        get => _values[Index(server, layer, expert)];
        set => _values[Index(server, layer, expert)] = value;
    }

    public double Total => _values.Sum();

    /// <summary>Sum over servers: the cluster-wide load of one expert.</summary>
    public double Global(int layer, int expert)
    {
        var sum = 0.0;
        for (var n = 0; n < Servers; n++)
        {
            sum += this[n, layer, expert];
        }

        return sum;
    }

    public static ActivationCounts FromWorkload(int servers, MoeModel model, Workload workload)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(workload);
        var counts = new ActivationCounts(servers, model.Layers, model.Experts);
        foreach (var request in workload.Requests)
        {
            for (var l = 0; l < model.Layers; l++)
            {
                foreach (var e in request.Experts[l])
                {
                    counts._values[counts.Index(request.Server, l, e)] += 1;
                }
            }
        }

        return counts;
    }

    private int Index(int server, int layer, int expert) => (((server * Layers) + layer) * Experts) + expert;
}
