namespace DanceMoE.Placement;

/// <summary>
/// The bus's own work on one step's path (serialising, the broker, the peer's consumer, the answer back): each message's
/// work is serial, and the step's messages share <c>lanes</c> at once. On a cluster the work follows the links: the step
/// pays its slowest link and then the larger of its largest message's work and all its messages' work over the lanes.
/// On one shared host (<see cref="LatencyOptions.SharedHostBus"/>) a message's work runs while other messages wait out
/// their links: the step ends at the later of its slowest path (link, expert and the message's own work) and all its
/// messages' work over the lanes. One rule for the planner's model and bench replay's.
/// </summary>
public struct StepBusWork
{
    private double _largest;
    private double _sum;
    private double _slowestLink;
    private double _slowestPath;

    /// <summary>Adds one message whose bus work is <paramref name="seconds"/>.</summary>
    public void Add(double seconds) => Add(seconds, 0);

    /// <summary>Adds one message whose bus work is <paramref name="seconds"/> and whose link and peer take <paramref name="linkSeconds"/>.</summary>
    public void Add(double seconds, double linkSeconds)
    {
        _largest = Math.Max(_largest, seconds);
        _sum += seconds;
        _slowestLink = Math.Max(_slowestLink, linkSeconds);
        _slowestPath = Math.Max(_slowestPath, linkSeconds + seconds);
    }

    /// <summary>
    /// Adds the call to one peer: <paramref name="rowsSent"/> rows of <paramref name="rowBytes"/> out and
    /// <paramref name="rowsBack"/> back, their bus work by <paramref name="options"/>, the link's fixed and per-row seconds,
    /// then the peer's experts and any wait in its queue.
    /// </summary>
    public void AddCall(
        LatencyOptions options, int rowsSent, int rowsBack, double rowBytes, double linkFixed, double linkPerRow, double peerSeconds, double waitSeconds = 0)
    {
        ArgumentNullException.ThrowIfNull(options);
        Add(options.CallWorkSeconds(rowsSent * rowBytes, rowsBack * rowBytes), linkFixed + ((rowsSent + rowsBack) * linkPerRow) + peerSeconds + waitSeconds);
    }

    /// <summary>The step's bus seconds when <paramref name="lanes"/> messages' work runs at once (beyond its slowest link).</summary>
    public readonly double Seconds(int lanes) => Math.Max(_largest, _sum / Math.Max(1, lanes));

    /// <summary>The step's seconds, its slowest link and its bus work together, on a cluster or on one shared host.</summary>
    public readonly double StepSeconds(int lanes, bool sharedHost) =>
        sharedHost ? Math.Max(_slowestPath, _sum / Math.Max(1, lanes)) : _slowestLink + Seconds(lanes);
}
