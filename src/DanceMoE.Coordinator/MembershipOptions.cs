using System.ComponentModel.DataAnnotations;

namespace DanceMoE.Coordinator;

/// <summary>When an edge counts as down (section <c>Membership</c>).</summary>
public sealed class MembershipOptions
{
    public const string Section = "Membership";

    /// <summary>How often edges send heartbeats (the edge's <c>--heartbeat-seconds</c>).</summary>
    [Range(0.1, 3600)]
    public double HeartbeatSeconds { get; set; } = 2;

    /// <summary>An edge is down once this many heartbeats in a row are missing.</summary>
    [Range(1, 1000)]
    public int MissedHeartbeats { get; set; } = 3;

    public TimeSpan DownAfter => TimeSpan.FromSeconds(HeartbeatSeconds * MissedHeartbeats);

    /// <summary>Alive while the last heartbeat is younger than <see cref="DownAfter"/>.</summary>
    public bool IsAlive(DateTimeOffset lastSeen, DateTimeOffset now) => now - lastSeen < DownAfter;
}
