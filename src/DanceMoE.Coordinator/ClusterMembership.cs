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
    private static readonly TimeSpan WarmPoll = TimeSpan.FromMilliseconds(250);

    private readonly ConcurrentDictionary<string, EdgeHeartbeat> _beats = new(StringComparer.Ordinal);
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly DateTimeOffset _startedAt = (time ?? TimeProvider.System).GetUtcNow();
    private readonly ConcurrentDictionary<string, TimeSpan> _expected = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, bool> _givenUp = new(StringComparer.Ordinal);

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
    /// The edges <c>edge_servers</c> recorded before this (re)start. Those alive at its newest record, by their own
    /// interval, may still beat, some less often than the coordinator assumes: warm-up waits to hear each of them, or
    /// until each has missed its own heartbeats. Measured from the newest record, not from now, because the table stood
    /// still while no coordinator ran.
    /// </summary>
    public void ExpectKnownEdges(IReadOnlyCollection<KnownEdge> edges)
    {
        ArgumentNullException.ThrowIfNull(edges);
        if (edges.Count == 0)
        {
            return;
        }

        var newest = edges.Max(e => e.LastSeenAt);
        foreach (var edge in edges)
        {
            var downAfter = Options.DownAfterFor(Math.Min(edge.HeartbeatSeconds, MembershipOptions.MaxHeartbeatSeconds));
            if (newest - edge.LastSeenAt < downAfter)
            {
                _expected[edge.EdgeId] = downAfter;
            }
        }
    }

    /// <summary>Whether every live edge could have been heard by <paramref name="now"/> (see <see cref="WaitUntilWarmAsync"/>).</summary>
    public bool IsWarm(DateTimeOffset now) => now >= WarmBy(ownHeartbeats: true);

    /// <summary>
    /// Waits, after a (re)start, until every live edge has had the time to send a heartbeat: until then an edge missing
    /// from the membership may just not have been heard from yet. That is the coordinator's own missed heartbeats, and for
    /// each edge of <see cref="ExpectKnownEdges"/> until it is heard or its own missed heartbeats have passed; at most
    /// <paramref name="most"/>, since an edge that said it beats hourly may be gone and the caller has a deadline.
    /// </summary>
    /// <returns>Whether warm-up ended; <see langword="false"/> when <paramref name="most"/> ran out first.</returns>
    public Task<bool> WaitUntilWarmAsync(TimeSpan most, CancellationToken cancellationToken) => WaitUntilAsync(() => WarmBy(ownHeartbeats: true), most, cancellationToken);

    /// <summary>
    /// Waits until every edge of <see cref="ExpectKnownEdges"/> is heard or has missed its own heartbeats, at most
    /// <paramref name="most"/>: what the placement job needs after a restart, whose recovery firing would otherwise plan
    /// for the edges heard in its first second. Without the coordinator's own missed heartbeats, which an edge the
    /// database never knew is the only reason for. An edge still unheard when this wait gives up is not waited for again,
    /// here or by warm-up: each placement run and migration after the restart would otherwise wait until that edge's
    /// missed heartbeats have passed, hours for an hourly one. (Warm-up's shorter waits give up on no edge.)
    /// </summary>
    /// <returns>Whether every known edge is accounted for; <see langword="false"/> when <paramref name="most"/> ran out first.</returns>
    public async Task<bool> WaitForKnownEdgesAsync(TimeSpan most, CancellationToken cancellationToken)
    {
        if (await WaitUntilAsync(() => WarmBy(ownHeartbeats: false), most, cancellationToken).ConfigureAwait(false))
        {
            return true;
        }

        foreach (var edge in NotHeardYet())
        {
            _givenUp[edge] = true;
        }

        return false;
    }

    private async Task<bool> WaitUntilAsync(Func<DateTimeOffset> readyBy, TimeSpan most, CancellationToken cancellationToken)
    {
        var giveUpAt = _time.GetUtcNow() + most;
        for (var now = _time.GetUtcNow(); readyBy() - now is var left && left > TimeSpan.Zero; now = _time.GetUtcNow())
        {
            if (now >= giveUpAt)
            {
                return false;
            }

            // Looked at again now and then: an edge heard ends the wait early.
            var step = new[] { left, giveUpAt - now, WarmPoll }.Min();
            await Task.Delay(step, _time, cancellationToken).ConfigureAwait(false);
        }

        return true;
    }

    /// <summary>The edges <see cref="ExpectKnownEdges"/> named that have not been heard since this (re)start.</summary>
    public IReadOnlyList<string> NotHeardYet() => [.. _expected.Keys.Where(edge => !_beats.ContainsKey(edge)).Order(StringComparer.Ordinal)];

    private DateTimeOffset WarmBy(bool ownHeartbeats)
    {
        var by = ownHeartbeats ? _startedAt + Options.DownAfter : _startedAt;
        foreach (var (edge, downAfter) in _expected)
        {
            if (!_beats.ContainsKey(edge) && !_givenUp.ContainsKey(edge) && _startedAt + downAfter > by)
            {
                by = _startedAt + downAfter;
            }
        }

        return by;
    }
}

/// <summary>An edge as <c>edge_servers</c> last recorded it: when it was last heard and how often it said it beats (0: not said).</summary>
public sealed record KnownEdge(string EdgeId, DateTimeOffset LastSeenAt, double HeartbeatSeconds);
