using System.Collections.Concurrent;

namespace DanceMoE.Coordinator;

/// <summary>
/// The placement version each edge last said it routes by (<c>PlacementApplied</c>). Versions are not activated in
/// number order (a migration's target was registered before its intermediate steps), so only the latest answer counts.
/// Kept in memory: acknowledgements matter while a switch is under way, and edges answer again when it is republished.
/// </summary>
public sealed class PlacementAcknowledgements
{
    private readonly ConcurrentDictionary<string, int> _latest = new(StringComparer.Ordinal);

    public void Record(string edgeId, int version) => _latest[edgeId] = version;

    /// <summary>Edges whose latest acknowledgement is <paramref name="version"/>.</summary>
    public IReadOnlySet<string> AppliedBy(int version) =>
        _latest.Where(p => p.Value == version).Select(p => p.Key).ToHashSet(StringComparer.Ordinal);

    /// <summary>Waits until every edge in <paramref name="edges"/> routes by <paramref name="version"/>.</summary>
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
