using System.Collections.Concurrent;
using DanceMoE.Contracts;
using Microsoft.Extensions.Options;

namespace DanceMoE.Coordinator;

/// <summary>An edge as its last heartbeat described it, and whether it is alive at the time asked.</summary>
public sealed record EdgeMember(
    string EdgeId, long MemoryBudgetBytes, long MemoryUsedBytes, IReadOnlySet<string> LoadedExperts, int PlacementVersion, DateTimeOffset LastSeenAt, bool IsAlive)
{
    public bool Holds(int layer, int expert) => LoadedExperts.Contains(ExpertKey(layer, expert));

    /// <summary>The <c>layer:expert</c> key heartbeats list loaded experts by.</summary>
    public static string ExpertKey(int layer, int expert) => FormattableString.Invariant($"{layer}:{expert}");
}

/// <summary>
/// The coordinator's live view of the cluster, fed by heartbeats. Kept in memory: after a restart the coordinator
/// knows an edge again at its next heartbeat, a few seconds later.
/// </summary>
public sealed class ClusterMembership(IOptions<MembershipOptions> options, TimeProvider? time = null)
{
    private readonly ConcurrentDictionary<string, EdgeHeartbeat> _beats = new(StringComparer.Ordinal);
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly DateTimeOffset _startedAt = (time ?? TimeProvider.System).GetUtcNow();

    public MembershipOptions Options { get; } = options.Value;

    public void Record(EdgeHeartbeat beat)
    {
        ArgumentNullException.ThrowIfNull(beat);
        _beats.AddOrUpdate(beat.EdgeId, beat, (_, previous) => previous.SentAt > beat.SentAt ? previous : beat);
    }

    /// <summary>Every edge ever heard from, ordered by id, alive or down at <paramref name="now"/>.</summary>
    public IReadOnlyList<EdgeMember> Snapshot(DateTimeOffset now) =>
        _beats.Values
            .OrderBy(b => b.EdgeId, StringComparer.Ordinal)
            .Select(b => new EdgeMember(
                b.EdgeId, b.MemoryBudgetBytes, b.MemoryUsedBytes, b.LoadedExperts.ToHashSet(StringComparer.Ordinal), b.PlacementVersion,
                b.SentAt, Options.IsAlive(b.SentAt, now, b.HeartbeatSeconds)))
            .ToList();

    public IReadOnlyList<EdgeMember> Alive(DateTimeOffset now) => Snapshot(now).Where(e => e.IsAlive).ToList();

    /// <summary>
    /// Waits, after a (re)start, until every live edge has had the time to send a heartbeat: until then an edge missing
    /// from the membership may just not have been heard from yet.
    /// </summary>
    public Task WaitUntilWarmAsync(CancellationToken cancellationToken)
    {
        var left = _startedAt + Options.DownAfter - _time.GetUtcNow();
        return left > TimeSpan.Zero ? Task.Delay(left, _time, cancellationToken) : Task.CompletedTask;
    }
}
