namespace DanceMoE.Edge;

/// <summary>Where experts live, as this edge routes now. A file today; the coordinator's events later.</summary>
public interface IRoutingTable
{
    EdgePlacement Current { get; }

    void Activate(EdgePlacement placement);
}

public sealed class RoutingTable(EdgePlacement initial) : IRoutingTable
{
    private EdgePlacement _current = initial ?? throw new ArgumentNullException(nameof(initial));

    public EdgePlacement Current => Volatile.Read(ref _current);

    public void Activate(EdgePlacement placement)
    {
        ArgumentNullException.ThrowIfNull(placement);
        Volatile.Write(ref _current, placement);
    }
}
