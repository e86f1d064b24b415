using DanceMoE.Data;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace DanceMoE.Coordinator;

/// <summary>
/// At start, before the bus, tells <see cref="ClusterMembership"/> which edges <c>edge_servers</c> knew, so that warm-up
/// waits for edges that beat less often than the coordinator assumes. A database that does not answer is only a warning:
/// warm-up then waits the coordinator's own missed heartbeats, as it did before any edge had recorded its interval.
/// </summary>
public sealed class MembershipWarmUp(IDbContextFactory<DanceMoEDbContext> dbFactory, ClusterMembership membership, ILogger<MembershipWarmUp> logger) : IHostedService
{
    private static readonly TimeSpan ReadTimeout = TimeSpan.FromSeconds(5);

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(ReadTimeout);
        try
        {
            await using var db = await dbFactory.CreateDbContextAsync(timeout.Token).ConfigureAwait(false);
            var known = await db.EdgeServers.AsNoTracking()
                .Select(e => new KnownEdge(e.Id, e.LastSeenAt, e.HeartbeatSeconds))
                .ToListAsync(timeout.Token).ConfigureAwait(false);
            membership.ExpectKnownEdges(known);
        }
        catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException { InnerException: NpgsqlException } || ex is OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            logger.LogWarning("cannot read the edges edge_servers knew ({Reason}); warm-up waits {Seconds} s for any edge", ex.Message, membership.Options.DownAfter.TotalSeconds);
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
