using System.Data;
using DanceMoE.Data;
using MassTransit;
using MassTransit.Saga;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Infrastructure;
using Microsoft.EntityFrameworkCore.Metadata;
using Microsoft.EntityFrameworkCore.Storage;

namespace DanceMoE.Coordinator.Saga;

/// <summary>
/// MassTransit saga repository over <see cref="DanceMoEDbContext"/> on PostgreSQL: one DbContext and one read-committed
/// transaction per message, the saga row locked with <c>SELECT ... FOR UPDATE</c> so messages for one saga run one after
/// the other, commit when the message is done and roll back when it fails. Registered per saga with
/// <see cref="PostgresSagaRepositoryExtensions.PostgresRepository{TSaga}"/>.
/// </summary>
public sealed class PostgresSagaRepositoryContextFactory<TSaga>(
    IDbContextFactory<DanceMoEDbContext> dbContextFactory,
    ISagaConsumeContextFactory<DanceMoEDbContext, TSaga> consumeContextFactory) :
    ISagaRepositoryContextFactory<TSaga>,
    IQuerySagaRepositoryContextFactory<TSaga>,
    ILoadSagaRepositoryContextFactory<TSaga>
    where TSaga : class, ISaga
{
    public void Probe(ProbeContext context)
    {
        context.Add("persistence", "postgresql");
        context.Add("entity", typeof(TSaga).Name);
    }

    public async Task Send<T>(ConsumeContext<T> context, IPipe<SagaRepositoryContext<TSaga, T>> next)
        where T : class
    {
        var db = await dbContextFactory.CreateDbContextAsync(context.CancellationToken).ConfigureAwait(false);
        await using (db.ConfigureAwait(false))
        {
            await InTransactionAsync(db, async transaction =>
            {
                using var repositoryContext = new PostgresSagaRepositoryContext<TSaga, T>(db, transaction, context, consumeContextFactory);
                await next.Send(repositoryContext).ConfigureAwait(false);
            }, context.CancellationToken).ConfigureAwait(false);
        }
    }

    public async Task SendQuery<T>(ConsumeContext<T> context, ISagaQuery<TSaga> query, IPipe<SagaRepositoryQueryContext<TSaga, T>> next)
        where T : class
    {
        var db = await dbContextFactory.CreateDbContextAsync(context.CancellationToken).ConfigureAwait(false);
        await using (db.ConfigureAwait(false))
        {
            await InTransactionAsync(db, async transaction =>
            {
                // Locked in key order, so two messages matching overlapping sets of sagas cannot deadlock.
                var ids = await db.Set<TSaga>().AsNoTracking()
                    .Where(query.FilterExpression)
                    .Select(s => s.CorrelationId)
                    .OrderBy(id => id)
                    .ToListAsync(context.CancellationToken).ConfigureAwait(false);
                var instances = new List<TSaga>(ids.Count);
                foreach (var id in ids)
                {
                    // A saga deleted between the query and the lock is skipped.
                    if (await SagaRowLock<TSaga>.LoadAsync(db, id, context.CancellationToken).ConfigureAwait(false) is { } instance)
                    {
                        instances.Add(instance);
                    }
                }

                using var repositoryContext = new PostgresSagaRepositoryContext<TSaga, T>(db, transaction, context, consumeContextFactory);
                await next.Send(new LoadedSagaRepositoryQueryContext<TSaga, T>(repositoryContext, instances)).ConfigureAwait(false);
            }, context.CancellationToken).ConfigureAwait(false);
        }
    }

    public Task<T> Execute<T>(Func<LoadSagaRepositoryContext<TSaga>, Task<T>> asyncMethod, CancellationToken cancellationToken = default)
        where T : class => ExecuteAsync(asyncMethod, cancellationToken);

    public Task<T> Execute<T>(Func<QuerySagaRepositoryContext<TSaga>, Task<T>> asyncMethod, CancellationToken cancellationToken = default)
        where T : class => ExecuteAsync(asyncMethod, cancellationToken);

    private async Task<T> ExecuteAsync<T>(Func<PostgresSagaRepositoryContext<TSaga>, Task<T>> asyncMethod, CancellationToken cancellationToken)
    {
        var db = await dbContextFactory.CreateDbContextAsync(cancellationToken).ConfigureAwait(false);
        await using (db.ConfigureAwait(false))
        {
            return await asyncMethod(new PostgresSagaRepositoryContext<TSaga>(db, cancellationToken)).ConfigureAwait(false);
        }
    }

    private static async Task InTransactionAsync(DbContext db, Func<IDbContextTransaction, Task> body, CancellationToken cancellationToken)
    {
        // Read committed is enough: FOR UPDATE waits for the holder to commit and then reads the row it committed.
        var transaction = await db.Database.BeginTransactionAsync(IsolationLevel.ReadCommitted, cancellationToken).ConfigureAwait(false);
        await using (transaction.ConfigureAwait(false))
        {
            try
            {
                await body(transaction).ConfigureAwait(false);
                await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch
            {
                await RollbackQuietlyAsync(transaction).ConfigureAwait(false);
                throw;
            }
        }
    }

    private static async Task RollbackQuietlyAsync(IDbContextTransaction transaction)
    {
        try
        {
            await transaction.RollbackAsync(CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // The original exception is the one to report; a failed rollback ends with the connection anyway.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }
}

/// <summary>
/// Loads one saga row with <c>SELECT * FROM table WHERE key = @id FOR UPDATE</c>. Table, schema and key column come from
/// the EF model, so renaming them in <see cref="DanceMoEDbContext"/> needs no change here.
/// </summary>
internal static class SagaRowLock<TSaga>
    where TSaga : class, ISaga
{
    private static string? _statement;

    public static async Task<TSaga?> LoadAsync(DbContext db, Guid correlationId, CancellationToken cancellationToken)
    {
        var statement = _statement ??= BuildStatement(db);
        var rows = await db.Set<TSaga>().FromSqlRaw(statement, correlationId).AsTracking().ToListAsync(cancellationToken).ConfigureAwait(false);
        return rows.Count switch
        {
            0 => null,
            1 => rows[0],
            _ => throw new InvalidOperationException($"{rows.Count} {typeof(TSaga).Name} rows have the key {correlationId}"),
        };
    }

    private static string BuildStatement(DbContext db)
    {
        var entity = db.Model.FindEntityType(typeof(TSaga))
            ?? throw new InvalidOperationException($"{typeof(TSaga).Name} is not mapped in {db.GetType().Name}");
        var table = entity.GetTableName()
            ?? throw new InvalidOperationException($"{typeof(TSaga).Name} is not mapped to a table");
        var schema = entity.GetSchema();
        var key = entity.FindPrimaryKey()?.Properties is [{ Name: nameof(ISaga.CorrelationId) } property]
            ? property
            : throw new InvalidOperationException($"The primary key of {typeof(TSaga).Name} must be {nameof(ISaga.CorrelationId)} alone");
        var column = key.GetColumnName(StoreObjectIdentifier.Table(table, schema))
            ?? throw new InvalidOperationException($"{typeof(TSaga).Name}.{nameof(ISaga.CorrelationId)} has no column");
        var sql = db.GetService<ISqlGenerationHelper>();
        return $"SELECT * FROM {sql.DelimitIdentifier(table, schema)} WHERE {sql.DelimitIdentifier(column)} = {{0}} FOR UPDATE";
    }
}
