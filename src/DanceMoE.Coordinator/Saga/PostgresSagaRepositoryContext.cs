using DanceMoE.Data;
using MassTransit;
using MassTransit.Context;
using MassTransit.Middleware;
using MassTransit.Saga;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Storage;
using Npgsql;

namespace DanceMoE.Coordinator.Saga;

/// <summary>
/// What the saga pipe does with one message's saga, inside the transaction the factory opened: load (locked), add,
/// insert, update or delete the row. Nothing is committed here; the factory commits when the message is done.
/// </summary>
public sealed class PostgresSagaRepositoryContext<TSaga, TMessage> :
    ConsumeContextScope<TMessage>,
    SagaRepositoryContext<TSaga, TMessage>,
    IDisposable
    where TSaga : class, ISaga
    where TMessage : class
{
    private const string InsertSavepoint = "saga_insert";

    private readonly DanceMoEDbContext _db;
    private readonly IDbContextTransaction _transaction;
    private readonly ConsumeContext<TMessage> _consumeContext;
    private readonly ISagaConsumeContextFactory<DanceMoEDbContext, TSaga> _factory;

    // A DbContext is not thread safe; a state machine may finish with several of these calls at once.
    private readonly SemaphoreSlim _inUse = new(1);

    internal PostgresSagaRepositoryContext(
        DanceMoEDbContext db,
        IDbContextTransaction transaction,
        ConsumeContext<TMessage> consumeContext,
        ISagaConsumeContextFactory<DanceMoEDbContext, TSaga> factory)
        : base(consumeContext)
    {
        _db = db;
        _transaction = transaction;
        _consumeContext = consumeContext;
        _factory = factory;
    }

    /// <summary>A new instance the saga pipe has not saved yet (<see cref="Save"/> inserts it).</summary>
    public Task<SagaConsumeContext<TSaga, TMessage>> Add(TSaga instance) =>
        _factory.CreateSagaConsumeContext(_db, _consumeContext, instance, SagaConsumeContextMode.Add);

    /// <summary>
    /// Inserts the instance now (<c>InsertOnInitial</c>); null when a row with its id exists, also when another message
    /// inserts it first, and the transaction stays usable for the <see cref="Load"/> that follows.
    /// </summary>
    public async Task<SagaConsumeContext<TSaga, TMessage>> Insert(TSaga instance)
    {
        await _inUse.WaitAsync(CancellationToken).ConfigureAwait(false);
        try
        {
            // A redelivered initial event finds its row here, without a failed statement (which EF logs as an error).
            if (await _db.Set<TSaga>().AnyAsync(s => s.CorrelationId == instance.CorrelationId, CancellationToken).ConfigureAwait(false))
            {
                return null!;
            }

            var entry = _db.Set<TSaga>().Add(instance);
            // A failed statement aborts a PostgreSQL transaction; rolling back to the savepoint undoes only the insert.
            await _transaction.CreateSavepointAsync(InsertSavepoint, CancellationToken).ConfigureAwait(false);
            try
            {
                await _db.SaveChangesAsync(CancellationToken).ConfigureAwait(false);
            }
            catch (DbUpdateException ex) when (ex.InnerException is PostgresException { SqlState: PostgresErrorCodes.UniqueViolation })
            {
                entry.State = EntityState.Detached;
                await _transaction.RollbackToSavepointAsync(InsertSavepoint, CancellationToken).ConfigureAwait(false);
                return null!;
            }

            await _transaction.ReleaseSavepointAsync(InsertSavepoint, CancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _inUse.Release();
        }

        return await _factory.CreateSagaConsumeContext(_db, _consumeContext, instance, SagaConsumeContextMode.Insert).ConfigureAwait(false);
    }

    /// <summary>The instance with its row locked until the transaction ends; null when there is no row.</summary>
    public async Task<SagaConsumeContext<TSaga, TMessage>> Load(Guid correlationId)
    {
        TSaga? instance;
        await _inUse.WaitAsync(CancellationToken).ConfigureAwait(false);
        try
        {
            instance = await SagaRowLock<TSaga>.LoadAsync(_db, correlationId, CancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _inUse.Release();
        }

        return instance is null
            ? null!
            : await _factory.CreateSagaConsumeContext(_db, _consumeContext, instance, SagaConsumeContextMode.Load).ConfigureAwait(false);
    }

    /// <summary>Inserts an instance created by <see cref="Add"/>; a row inserted meanwhile by another message fails it (and the message is retried).</summary>
    public Task Save(SagaConsumeContext<TSaga> context) => SaveChangesAsync(db => db.Set<TSaga>().Add(context.Saga));

    public Task Update(SagaConsumeContext<TSaga> context) => SaveChangesAsync(_ => { });

    public Task Delete(SagaConsumeContext<TSaga> context) => SaveChangesAsync(db => db.Set<TSaga>().Remove(context.Saga));

    /// <summary>Nothing to do: an added instance is written only by <see cref="Save"/>.</summary>
    public Task Discard(SagaConsumeContext<TSaga> context) => Task.CompletedTask;

    /// <summary>Forgets the changes a read-only policy made to the instance, so a later save does not write them.</summary>
    public async Task Undo(SagaConsumeContext<TSaga> context)
    {
        await _inUse.WaitAsync(CancellationToken).ConfigureAwait(false);
        try
        {
            var entry = _db.ChangeTracker.Entries<TSaga>().FirstOrDefault(e => e.Entity.CorrelationId == context.Saga.CorrelationId);
            if (entry is not null)
            {
                entry.State = EntityState.Unchanged;
            }
        }
        finally
        {
            _inUse.Release();
        }
    }

    public Task<SagaConsumeContext<TSaga, T>> CreateSagaConsumeContext<T>(ConsumeContext<T> consumeContext, TSaga instance, SagaConsumeContextMode mode)
        where T : class => _factory.CreateSagaConsumeContext(_db, consumeContext, instance, mode);

    public void Dispose() => _inUse.Dispose();

    private async Task SaveChangesAsync(Action<DanceMoEDbContext> change)
    {
        await _inUse.WaitAsync(CancellationToken).ConfigureAwait(false);
        try
        {
            change(_db);
            await _db.SaveChangesAsync(CancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _inUse.Release();
        }
    }
}

/// <summary>Reads sagas outside a message (the test harness, <see cref="ILoadSagaRepository{TSaga}"/>, <see cref="IQuerySagaRepository{TSaga}"/>): no lock, no tracking.</summary>
public sealed class PostgresSagaRepositoryContext<TSaga> :
    BasePipeContext,
    LoadSagaRepositoryContext<TSaga>,
    QuerySagaRepositoryContext<TSaga>
    where TSaga : class, ISaga
{
    private readonly DanceMoEDbContext _db;

    internal PostgresSagaRepositoryContext(DanceMoEDbContext db, CancellationToken cancellationToken)
        : base(cancellationToken)
    {
        _db = db;
    }

    public async Task<TSaga> Load(Guid correlationId) =>
        (await _db.Set<TSaga>().AsNoTracking().SingleOrDefaultAsync(s => s.CorrelationId == correlationId, CancellationToken).ConfigureAwait(false))!;

    public async Task<SagaRepositoryQueryContext<TSaga>> Query(ISagaQuery<TSaga> query, CancellationToken cancellationToken)
    {
        var ids = await _db.Set<TSaga>().AsNoTracking()
            .Where(query.FilterExpression)
            .Select(s => s.CorrelationId)
            .ToListAsync(cancellationToken).ConfigureAwait(false);
        return new DefaultSagaRepositoryQueryContext<TSaga>(this, ids);
    }
}
