using System.ComponentModel.DataAnnotations;

namespace DanceMoE.Coordinator;

/// <summary>When an edge counts as down (section <c>Membership</c>).</summary>
public sealed class MembershipOptions
{
    public const string Section = "Membership";

    public const double MaxHeartbeatSeconds = 3600;

    /// <summary>
    /// How often edges send heartbeats (the edge's <c>--heartbeat-seconds</c>); an edge whose heartbeat says it sends less
    /// often is given its own interval.
    /// </summary>
    [Range(0.1, MaxHeartbeatSeconds)]
    public double HeartbeatSeconds { get; set; } = 2;

    /// <summary>An edge is down once this many heartbeats in a row are missing.</summary>
    [Range(1, 1000)]
    public int MissedHeartbeats { get; set; } = 3;

    public TimeSpan DownAfter => TimeSpan.FromSeconds(HeartbeatSeconds * MissedHeartbeats);

    /// <summary>
    /// Alive while the last heartbeat is younger than <see cref="DownAfter"/>, or than <see cref="MissedHeartbeats"/> of
    /// the edge's own interval (<paramref name="edgeHeartbeatSeconds"/>, 0 when unknown) when it is longer: an edge set to
    /// beat every 10 s would otherwise be down between any two of its heartbeats.
    /// </summary>
    public bool IsAlive(DateTimeOffset lastSeen, DateTimeOffset now, double edgeHeartbeatSeconds = 0) => now - lastSeen < DownAfterFor(edgeHeartbeatSeconds);

    /// <summary>How long an edge that beats every <paramref name="edgeHeartbeatSeconds"/> (0 when unknown) stays alive unheard.</summary>
    public TimeSpan DownAfterFor(double edgeHeartbeatSeconds) =>
        edgeHeartbeatSeconds > HeartbeatSeconds ? TimeSpan.FromSeconds(edgeHeartbeatSeconds * MissedHeartbeats) : DownAfter;
}
