using DanceMoE.Contracts;
using DanceMoE.Data;
using DanceMoE.Hosting;
using MassTransit;
using Microsoft.EntityFrameworkCore;

namespace DanceMoE.Coordinator;

/// <summary>A placement as the registry stores it: version, algorithm, predicted cost and every replica.</summary>
public sealed record RegisteredPlacement(
    int Version, string Algorithm, double PredictedCost, bool IsActive, DateTimeOffset? ActivatedAt, IReadOnlyList<ExpertAssignment> Assignments)
{
    /// <summary>The event that tells edges to route by it (when it was activated).</summary>
    public PlacementActivated ToEvent() => new()
    {
        Version = Version,
        Assignments = Assignments,
        ActivatedAt = ActivatedAt ?? throw new InvalidOperationException($"placement version {Version} was never activated"),
    };
}

/// <summary>
/// Placement versions in PostgreSQL (<c>placements</c>, <c>placement_assignments</c>). Versions only grow; exactly one is
/// active once the first is activated. Activation switches the flag in one transaction, then tells every edge.
/// </summary>
public sealed class PlacementRegistry(IDbContextFactory<DanceMoEDbContext> dbFactory, IPublishEndpoint publish)
{
    // Serialises version numbering and activation across coordinator instances (pg_advisory_xact_lock key).
    private const long RegistryLock = 0x44616E63654D6F45;

    public async Task<int> AddAsync(string algorithm, double predictedCost, string inputsDigest, IReadOnlyList<ExpertAssignment> assignments, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(assignments);
        await using var db = await dbFactory.CreateDbContextAsync(cancellationToken).ConfigureAwait(false);
        await using var transaction = await db.Database.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        await LockAsync(db, cancellationToken).ConfigureAwait(false);
        var version = (await db.Placements.MaxAsync(p => (int?)p.Version, cancellationToken).ConfigureAwait(false) ?? 0) + 1;
        var placement = new PlacementVersion
        {
            Version = version,
            CreatedAt = DateTimeOffset.UtcNow,
            Algorithm = algorithm,
            PredictedCost = predictedCost,
            InputsDigest = inputsDigest,
        };
        foreach (var assignment in assignments)
        {
            foreach (var server in assignment.Servers)
            {
                placement.Assignments.Add(new PlacementAssignment
                {
                    PlacementVersion = version,
                    Layer = checked((short)assignment.Layer),
                    Expert = checked((short)assignment.Expert),
                    EdgeId = server,
                });
            }
        }

        db.Placements.Add(placement);
        await db.SaveChangesAsync(cancellationToken).ConfigureAwait(false);
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        return version;
    }

    /// <summary>The active version as this registry last read or activated it; null before it did either.</summary>
    public int? KnownActiveVersion => Volatile.Read(ref _knownActive) is var v && v > 0 ? v : null;

    private int _knownActive;

    /// <summary>
    /// Makes <paramref name="version"/> the only active placement and publishes <see cref="PlacementActivated"/>; the publish
    /// waits for the broker's confirm until <paramref name="confirm"/> as well (a consumer's <see cref="SendConfirmDeadline"/>).
    /// </summary>
    public async Task ActivateAsync(int version, CancellationToken cancellationToken, CancellationToken confirm = default)
    {
        DateTimeOffset activatedAt;
        await using (var db = await dbFactory.CreateDbContextAsync(cancellationToken).ConfigureAwait(false))
        {
            await using var transaction = await db.Database.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
            await LockAsync(db, cancellationToken).ConfigureAwait(false);

            // Taken under the lock, so activation times follow the order the registry activated in (edges go by them);
            // cut to the microseconds PostgreSQL keeps, so a republished event carries the same time.
            var now = DateTimeOffset.UtcNow;
            activatedAt = new DateTimeOffset(now.Ticks - (now.Ticks % 10), TimeSpan.Zero);
            if (!await db.Placements.AnyAsync(p => p.Version == version, cancellationToken).ConfigureAwait(false))
            {
                throw new InvalidOperationException($"placement version {version} does not exist");
            }

            await db.Placements.Where(p => p.IsActive && p.Version != version)
                .ExecuteUpdateAsync(s => s.SetProperty(p => p.IsActive, false), cancellationToken).ConfigureAwait(false);
            await db.Placements.Where(p => p.Version == version && !p.IsActive)
                .ExecuteUpdateAsync(s => s.SetProperty(p => p.IsActive, true).SetProperty(p => p.ActivatedAt, activatedAt), cancellationToken).ConfigureAwait(false);
            await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        }

        var placement = await GetAsync(version, cancellationToken).ConfigureAwait(false)
            ?? throw new InvalidOperationException($"placement version {version} vanished");
        Volatile.Write(ref _knownActive, version);
        using var publishing = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, confirm);
        await publish.Publish(new PlacementActivated { Version = version, Assignments = placement.Assignments, ActivatedAt = activatedAt }, publishing.Token)
            .ConfigureAwait(false);
    }

    /// <summary>Publishes <see cref="PlacementActivated"/> again for <paramref name="version"/>, with its first activation time.</summary>
    public async Task RepublishAsync(int version, CancellationToken cancellationToken, CancellationToken confirm = default)
    {
        var placement = await GetAsync(version, cancellationToken).ConfigureAwait(false)
            ?? throw new InvalidOperationException($"placement version {version} does not exist");
        using var publishing = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, confirm);
        await publish.Publish(placement.ToEvent(), publishing.Token).ConfigureAwait(false);
    }

    /// <summary>The version registered with <paramref name="inputsDigest"/>, if any (a migration registers each of its steps once).</summary>
    public async Task<int?> FindByDigestAsync(string inputsDigest, CancellationToken cancellationToken)
    {
        await using var db = await dbFactory.CreateDbContextAsync(cancellationToken).ConfigureAwait(false);
        return await db.Placements.Where(p => p.InputsDigest == inputsDigest).OrderBy(p => p.Version).Select(p => (int?)p.Version)
            .FirstOrDefaultAsync(cancellationToken).ConfigureAwait(false);
    }

    public async Task<RegisteredPlacement?> GetActiveAsync(CancellationToken cancellationToken)
    {
        await using var db = await dbFactory.CreateDbContextAsync(cancellationToken).ConfigureAwait(false);
        var version = await db.Placements.Where(p => p.IsActive).Select(p => (int?)p.Version).SingleOrDefaultAsync(cancellationToken).ConfigureAwait(false);
        if (version is { } v)
        {
            Volatile.Write(ref _knownActive, v);
            return await GetAsync(v, cancellationToken).ConfigureAwait(false);
        }

        return null;
    }

    public async Task<RegisteredPlacement?> GetAsync(int version, CancellationToken cancellationToken)
    {
        await using var db = await dbFactory.CreateDbContextAsync(cancellationToken).ConfigureAwait(false);
        var placement = await db.Placements.AsNoTracking().Include(p => p.Assignments)
            .SingleOrDefaultAsync(p => p.Version == version, cancellationToken).ConfigureAwait(false);
        if (placement is null)
        {
            return null;
        }

        var assignments = placement.Assignments
            .GroupBy(a => (a.Layer, a.Expert))
            .OrderBy(g => g.Key.Layer).ThenBy(g => g.Key.Expert)
            .Select(g => new ExpertAssignment
            {
                Layer = g.Key.Layer,
                Expert = g.Key.Expert,
                Servers = g.Select(a => a.EdgeId).Order(StringComparer.Ordinal).ToList(),
            })
            .ToList();
        return new RegisteredPlacement(placement.Version, placement.Algorithm, placement.PredictedCost, placement.IsActive, placement.ActivatedAt, assignments);
    }

    private static Task<int> LockAsync(DanceMoEDbContext db, CancellationToken cancellationToken) =>
        db.Database.ExecuteSqlAsync($"SELECT pg_advisory_xact_lock({RegistryLock})", cancellationToken);
}
