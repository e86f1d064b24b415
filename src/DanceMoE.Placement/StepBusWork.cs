namespace DanceMoE.Placement;

/// <summary>
/// The bus's own work on one step's path (serialising, the broker, the peer's consumer, the answer back): each message's
/// work is serial, and the step's messages share <c>lanes</c> at once, so the step pays the larger of its largest
/// message's work and all its messages' work over the lanes. One rule for the planner's model and bench replay's.
/// </summary>
public struct StepBusWork
{
    private double _largest;
    private double _sum;

    /// <summary>Adds one message whose bus work is <paramref name="seconds"/>.</summary>
    public void Add(double seconds)
    {
        _largest = Math.Max(_largest, seconds);
        _sum += seconds;
    }

    /// <summary>The step's bus seconds when <paramref name="lanes"/> messages' work runs at once.</summary>
    public readonly double Seconds(int lanes) => Math.Max(_largest, _sum / Math.Max(1, lanes));
}
