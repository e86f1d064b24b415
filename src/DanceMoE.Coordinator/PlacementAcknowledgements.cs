using System.Collections.Concurrent;

namespace DanceMoE.Coordinator;

/// <summary>Which edges answered <c>PlacementApplied</c> for which versions (in memory: acknowledgements matter while a switch is under way).</summary>
public sealed class PlacementAcknowledgements
{
    private readonly ConcurrentDictionary<int, ConcurrentDictionary<string, DateTimeOffset>> _applied = new();

    public void Expect(int version) => _applied.GetOrAdd(version, _ => new(StringComparer.Ordinal));

    /// <summary>An edge that routes by <paramref name="version"/> also acknowledges every older version.</summary>
    public void Record(string edgeId, int version, DateTimeOffset at)
    {
        _applied.GetOrAdd(version, _ => new(StringComparer.Ordinal))[edgeId] = at;
    }

    public IReadOnlySet<string> AppliedBy(int version) =>
        _applied.Where(p => p.Key >= version).SelectMany(p => p.Value.Keys).ToHashSet(StringComparer.Ordinal);

    /// <summary>Waits until every edge in <paramref name="edges"/> routes by <paramref name="version"/> or newer.</summary>
    public async Task<bool> WaitForAsync(int version, IEnumerable<string> edges, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var wanted = edges.ToHashSet(StringComparer.Ordinal);
        using var timer = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timer.CancelAfter(timeout);
        try
        {
            while (!wanted.IsSubsetOf(AppliedBy(version)))
            {
                await Task.Delay(50, timer.Token).ConfigureAwait(false);
            }

            return true;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }
}
