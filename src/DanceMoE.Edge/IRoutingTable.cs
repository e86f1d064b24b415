namespace DanceMoE.Edge;

/// <summary>Where experts live, as this edge routes now. A file today; the coordinator's events later.</summary>
public interface IRoutingTable
{
    EdgePlacement Current { get; }

    void Activate(EdgePlacement placement);
}

/// <summary>The routing table of an edge: the bootstrap placement of its model until a newer one is activated.</summary>
public sealed class RoutingTable(EdgeModel model) : IRoutingTable
{
    private EdgePlacement _current = model?.Placement ?? throw new ArgumentNullException(nameof(model));

    public EdgePlacement Current => Volatile.Read(ref _current);

    public void Activate(EdgePlacement placement)
    {
        ArgumentNullException.ThrowIfNull(placement);
        Volatile.Write(ref _current, placement);
    }
}
