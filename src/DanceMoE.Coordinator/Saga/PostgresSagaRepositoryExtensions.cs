using DanceMoE.Data;
using MassTransit;
using MassTransit.Configuration;
using MassTransit.Saga;

namespace DanceMoE.Coordinator.Saga;

/// <summary>Registers <see cref="PostgresSagaRepositoryContextFactory{TSaga}"/> as a saga's repository.</summary>
public static class PostgresSagaRepositoryExtensions
{
    /// <summary>
    /// Persists the saga in its table of <see cref="DanceMoEDbContext"/>, through the
    /// <c>IDbContextFactory&lt;DanceMoEDbContext&gt;</c> the host registers (<c>AddDanceMoEDatabase</c>). Replaces the
    /// in-memory repository MassTransit registers by default, also for the test harness.
    /// </summary>
    public static ISagaRegistrationConfigurator<TSaga> PostgresRepository<TSaga>(this ISagaRegistrationConfigurator<TSaga> saga)
        where TSaga : class, ISaga
    {
        ArgumentNullException.ThrowIfNull(saga);
        return saga.Repository(r =>
        {
            r.RegisterSagaRepository<TSaga, DanceMoEDbContext, SagaConsumeContextFactory<DanceMoEDbContext, TSaga>, PostgresSagaRepositoryContextFactory<TSaga>>();
            r.RegisterQuerySagaRepository<TSaga, PostgresSagaRepositoryContextFactory<TSaga>>();
            r.RegisterLoadSagaRepository<TSaga, PostgresSagaRepositoryContextFactory<TSaga>>();
        });
    }
}
