using System.Collections.Concurrent;
using DanceMoE.Coordinator.Saga;
using DanceMoE.Data;
using DanceMoE.Hosting;
using DanceMoE.Migrations;
using MassTransit;
using MassTransit.Saga;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DanceMoE.IntegrationTests.Coordinator;

/// <summary>
/// <see cref="PostgresSagaRepositoryContextFactory{TSaga}"/> under a small state machine over <see cref="MigrationState"/>,
/// on the real RabbitMQ (a virtual host per test) and PostgreSQL (one migrated database for the class; every test uses
/// its own saga ids). Each test starts its own host, as the coordinator builds it: retry and in-memory outbox on the saga
/// endpoint, <c>ConfigureEndpoints</c> last.
/// </summary>
public sealed class SagaRepositoryTests(SagaRepositoryTests.DatabaseFixture database) : IClassFixture<SagaRepositoryTests.DatabaseFixture>, IAsyncLifetime
{
    private readonly IsolatedVirtualHost _virtualHost = new();
    private readonly List<IHost> _hosts = [];

    [Fact]
    public async Task An_initial_event_creates_a_row_with_the_state_name_and_later_events_load_and_update_it()
    {
        var host = await StartHostAsync();
        var bus = host.Services.GetRequiredService<IBus>();
        var id = NewId.NextGuid();

        await bus.Publish(new StartTestSaga { MigrationId = id, DecisionId = 41 });
        var started = await WaitForRowAsync(id, s => s.CurrentState == "Running", "the start creates the row");
        Assert.Equal(0, started.MoveIndex);
        Assert.Equal(41, started.DecisionId);
        await using (var db = database.Db())
        {
            Assert.Equal(["Running"], await db.Database.SqlQuery<string>($"SELECT state AS \"Value\" FROM migrations WHERE id = {id}").ToListAsync());
        }

        await bus.Publish(new BumpTestSaga { MigrationId = id });
        await WaitForRowAsync(id, s => s.MoveIndex == 1, "the first bump is saved");
        await bus.Publish(new BumpTestSaga { MigrationId = id });
        var bumped = await WaitForRowAsync(id, s => s.MoveIndex == 2, "the second bump is saved");

        Assert.Equal("Running", bumped.CurrentState);
        Assert.Equal(41, bumped.DecisionId);
        Assert.Empty(Observer(host).Faults);
    }

    [Fact]
    public async Task Fifty_concurrent_events_for_one_saga_are_applied_one_after_another_without_a_lost_update()
    {
        var host = await StartHostAsync();
        var bus = host.Services.GetRequiredService<IBus>();
        var id = NewId.NextGuid();
        await bus.Publish(new StartTestSaga { MigrationId = id });
        await WaitForRowAsync(id, s => s.CurrentState == "Running", "the start creates the row");

        await Task.WhenAll(Enumerable.Range(0, 50).Select(_ => bus.Publish(new BumpTestSaga { MigrationId = id })));
        await Observer(host).WaitForConsumedAsync<BumpTestSaga>(id, 50);

        await using var db = database.Db();
        var saga = await db.Migrations.AsNoTracking().SingleAsync(s => s.CorrelationId == id);
        Assert.Equal(50, saga.MoveIndex);
        Assert.Empty(Observer(host).Faults);
        // Without concurrency on the endpoint there would be nothing to lose, and the test would prove nothing.
        Assert.True(Observer(host).MaxInFlight >= 4, $"at most {Observer(host).MaxInFlight} messages were in flight together");
    }

    [Fact]
    public async Task An_event_for_an_unknown_saga_creates_nothing_and_the_endpoint_keeps_consuming()
    {
        var host = await StartHostAsync();
        var bus = host.Services.GetRequiredService<IBus>();
        var unknown = NewId.NextGuid();

        await bus.Publish(new BumpTestSaga { MigrationId = unknown });
        await Observer(host).WaitForConsumedAsync<BumpTestSaga>(unknown, 1);

        var id = NewId.NextGuid();
        await bus.Publish(new StartTestSaga { MigrationId = id });
        await WaitForRowAsync(id, s => s.CurrentState == "Running", "a saga started after the unknown event is created");
        await bus.Publish(new BumpTestSaga { MigrationId = id });
        await WaitForRowAsync(id, s => s.MoveIndex == 1, "a later event is applied");

        await using var db = database.Db();
        Assert.False(await db.Migrations.AnyAsync(s => s.CorrelationId == unknown));
        Assert.Empty(Observer(host).Faults);
    }

    [Fact]
    public async Task A_finished_saga_keeps_its_row_in_the_final_state_with_its_reason()
    {
        var host = await StartHostAsync();
        var bus = host.Services.GetRequiredService<IBus>();
        var id = NewId.NextGuid();

        await bus.Publish(new StartTestSaga { MigrationId = id });
        await WaitForRowAsync(id, s => s.CurrentState == "Running", "the start creates the row");
        await bus.Publish(new BumpTestSaga { MigrationId = id });
        await WaitForRowAsync(id, s => s.MoveIndex == 1, "the bump is saved");
        await bus.Publish(new FinishTestSaga { MigrationId = id, Reason = "all moves done" });
        var finished = await WaitForRowAsync(id, s => s.CurrentState == "Final", "the finish is saved");

        Assert.Equal("all moves done", finished.Reason);
        Assert.NotNull(finished.FinishedAt);
        Assert.Equal(1, finished.MoveIndex);
        Assert.Empty(Observer(host).Faults);
    }

    [Fact]
    public async Task A_saga_completed_when_finalized_is_deleted()
    {
        var host = await StartHostAsync(new TestSagaOptions { DeleteWhenFinalized = true });
        var bus = host.Services.GetRequiredService<IBus>();
        var id = NewId.NextGuid();

        await bus.Publish(new StartTestSaga { MigrationId = id });
        await WaitForRowAsync(id, s => s.CurrentState == "Running", "the start creates the row");
        await bus.Publish(new FinishTestSaga { MigrationId = id, Reason = "done" });
        await Observer(host).WaitForConsumedAsync<FinishTestSaga>(id, 1);

        await using var db = database.Db();
        Assert.False(await db.Migrations.AnyAsync(s => s.CorrelationId == id));
        Assert.Empty(Observer(host).Faults);
    }

    [Fact]
    public async Task A_saga_survives_a_restart_and_a_second_host_with_a_fresh_container_continues_it()
    {
        var id = NewId.NextGuid();
        var first = await StartHostAsync();
        var firstBus = first.Services.GetRequiredService<IBus>();
        await firstBus.Publish(new StartTestSaga { MigrationId = id, DecisionId = 7 });
        await WaitForRowAsync(id, s => s.CurrentState == "Running", "the start creates the row");
        await firstBus.Publish(new BumpTestSaga { MigrationId = id });
        await WaitForRowAsync(id, s => s.MoveIndex == 1, "the bump is saved");
        Assert.Empty(Observer(first).Faults);
        await first.StopAsync();
        first.Dispose();
        _hosts.Remove(first);

        var second = await StartHostAsync();
        var loaded = await second.Services.GetRequiredService<ILoadSagaRepository<MigrationState>>().Load(id);
        Assert.NotNull(loaded);
        Assert.Equal(("Running", 1), (loaded.CurrentState, loaded.MoveIndex));
        var found = await second.Services.GetRequiredService<IQuerySagaRepository<MigrationState>>()
            .Find(new SagaQuery<MigrationState>(s => s.DecisionId == 7 && s.CurrentState == "Running"));
        Assert.Contains(id, found);

        var secondBus = second.Services.GetRequiredService<IBus>();
        await secondBus.Publish(new BumpTestSaga { MigrationId = id });
        await WaitForRowAsync(id, s => s.MoveIndex == 2, "the second host applies a bump to the saga the first one saved");
        await secondBus.Publish(new FinishTestSaga { MigrationId = id, Reason = "finished after a restart" });
        var finished = await WaitForRowAsync(id, s => s.CurrentState == "Final", "the second host finishes it");
        Assert.Equal(2, finished.MoveIndex);
        Assert.Empty(Observer(second).Faults);
    }

    [Fact]
    public async Task Concurrent_initial_events_for_one_new_saga_create_exactly_one_row()
    {
        var host = await StartHostAsync();
        var bus = host.Services.GetRequiredService<IBus>();
        var id = NewId.NextGuid();

        await Task.WhenAll(Enumerable.Range(0, 10).Select(_ => bus.Publish(new StartTestSaga { MigrationId = id })));
        // All ten end consumed: the losers of the race fail on the primary key, are retried, find the row and are ignored.
        await Observer(host).WaitForConsumedAsync<StartTestSaga>(id, 10);

        await using var db = database.Db();
        var saga = await db.Migrations.AsNoTracking().SingleAsync(s => s.CorrelationId == id);
        Assert.Equal("Running", saga.CurrentState);
    }

    [Fact]
    public async Task With_insert_on_initial_a_duplicate_initial_event_finds_the_existing_row_without_a_retry_and_leaves_it_intact()
    {
        var host = await StartHostAsync(new TestSagaOptions { InsertOnInitial = true });
        var bus = host.Services.GetRequiredService<IBus>();
        var id = NewId.NextGuid();

        await Task.WhenAll(Enumerable.Range(0, 10).Select(_ => bus.Publish(new StartTestSaga { MigrationId = id })));
        await Observer(host).WaitForConsumedAsync<StartTestSaga>(id, 10);
        await bus.Publish(new BumpTestSaga { MigrationId = id });
        await WaitForRowAsync(id, s => s.MoveIndex == 1, "the bump is saved");

        await bus.Publish(new StartTestSaga { MigrationId = id });
        await Observer(host).WaitForConsumedAsync<StartTestSaga>(id, 11);
        await bus.Publish(new BumpTestSaga { MigrationId = id });
        var saga = await WaitForRowAsync(id, s => s.MoveIndex == 2, "a bump after the duplicate start continues from the saved row");

        Assert.Equal("Running", saga.CurrentState);
        // A failed insert that poisoned the transaction would fail the load after it, and the message would be retried.
        Assert.Empty(Observer(host).Faults);
        Assert.All(Observer(host).Consumed.Where(c => c.Id == id), c => Assert.Equal(0, c.RetryAttempt));
    }

    [Fact]
    public async Task An_event_correlated_by_a_query_updates_every_matching_saga_and_no_other()
    {
        var host = await StartHostAsync();
        var bus = host.Services.GetRequiredService<IBus>();
        var decision = Random.Shared.NextInt64(1_000_000, long.MaxValue);
        var matching = new[] { NewId.NextGuid(), NewId.NextGuid(), NewId.NextGuid() };
        var other = NewId.NextGuid();
        foreach (var id in matching)
        {
            await bus.Publish(new StartTestSaga { MigrationId = id, DecisionId = decision });
        }

        await bus.Publish(new StartTestSaga { MigrationId = other, DecisionId = decision - 1 });
        foreach (var id in matching.Append(other))
        {
            await WaitForRowAsync(id, s => s.CurrentState == "Running", "the start creates the row");
        }

        await Task.WhenAll(Enumerable.Range(0, 5).Select(_ => bus.Publish(new BumpTestSagasOfDecision { DecisionId = decision })));
        foreach (var id in matching)
        {
            await WaitForRowAsync(id, s => s.MoveIndex == 5, "every saga of the decision is bumped by each of the five events");
        }

        await using var db = database.Db();
        Assert.Equal(0, (await db.Migrations.AsNoTracking().SingleAsync(s => s.CorrelationId == other)).MoveIndex);
        Assert.Empty(Observer(host).Faults);
    }

    public Task InitializeAsync() => _virtualHost.InitializeAsync();

    public async Task DisposeAsync()
    {
        foreach (var host in _hosts)
        {
            await host.StopAsync();
            host.Dispose();
        }

        await _virtualHost.DisposeAsync();
    }

    private static SagaObserver Observer(IHost host) => host.Services.GetRequiredService<SagaObserver>();

    private async Task<IHost> StartHostAsync(TestSagaOptions? options = null)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ConnectionStrings:rabbitmq"] = _virtualHost.Uri,
            ["ConnectionStrings:postgres"] = database.Database.ConnectionString,
        }).Build();
        var builder = ServiceHost.CreateBuilder(configuration, l => l.SetMinimumLevel(LogLevel.Warning));
        var services = builder.Services;
        services.AddDanceMoEConnections(builder.Configuration);
        services.AddDanceMoEDatabase(builder.Configuration);
        services.AddSingleton(options ?? new TestSagaOptions());
        services.AddSingleton<SagaObserver>();
        services.AddReceiveObserver(sp => sp.GetRequiredService<SagaObserver>());
        services.AddMassTransit(bus =>
        {
            bus.AddSagaStateMachine<TestSagaStateMachine, MigrationState, TestSagaDefinition>().PostgresRepository();
            bus.UsingRabbitMq((context, cfg) =>
            {
                context.GetRequiredService<IOptions<RabbitMqOptions>>().Value.ConfigureHost(cfg);
                cfg.ConfigureEndpoints(context);
            });
        });
        services.Configure<MassTransitHostOptions>(o =>
        {
            o.WaitUntilStarted = true;
            o.StartTimeout = TimeSpan.FromSeconds(60);
            o.StopTimeout = TimeSpan.FromSeconds(15);
        });

        var host = builder.Build();
        // MassTransit keeps its log context in an AsyncLocal: a host started in the test's own flow would hand the next
        // host of the test its logger factory, disposed by then.
        Task starting;
        using (ExecutionContext.SuppressFlow())
        {
            starting = Task.Run(() => host.StartAsync());
        }

        try
        {
            await starting;
        }
        catch
        {
            host.Dispose();
            throw;
        }

        _hosts.Add(host);
        return host;
    }

    private async Task<MigrationState> WaitForRowAsync(Guid id, Func<MigrationState, bool> done, string what) =>
        await CoordinatorFixture.WaitForAsync(
            async () =>
            {
                await using var db = database.Db();
                var saga = await db.Migrations.AsNoTracking().SingleOrDefaultAsync(s => s.CorrelationId == id);
                return saga is not null && done(saga) ? saga : null;
            },
            what);

    /// <summary>One migrated database for the class.</summary>
    public sealed class DatabaseFixture : IAsyncLifetime
    {
        public IsolatedDatabase Database { get; } = new();

        public async Task InitializeAsync()
        {
            await Database.InitializeAsync();
            await DatabaseMigrator.MigrateAsync(Database.ConnectionString, TimeSpan.FromSeconds(10), CancellationToken.None);
        }

        public Task DisposeAsync() => Database.DisposeAsync();

        public DanceMoEDbContext Db() => DanceMoEDbContext.Create(Database.ConnectionString);
    }
}

/// <summary>How the test host builds <see cref="TestSagaStateMachine"/>.</summary>
public sealed class TestSagaOptions
{
    /// <summary>The start inserts the row before the state machine runs (<c>Insert</c>, not <c>Add</c> then <c>Save</c>).</summary>
    public bool InsertOnInitial { get; init; }

    /// <summary><c>SetCompletedWhenFinalized</c>: the repository deletes the row of a finished saga.</summary>
    public bool DeleteWhenFinalized { get; init; }
}

public sealed record StartTestSaga
{
    public Guid MigrationId { get; init; }

    public long? DecisionId { get; init; }
}

public sealed record BumpTestSaga
{
    public Guid MigrationId { get; init; }
}

public sealed record BumpTestSagasOfDecision
{
    public long DecisionId { get; init; }
}

public sealed record FinishTestSaga
{
    public Guid MigrationId { get; init; }

    public string Reason { get; init; } = "";
}

/// <summary>Start creates a saga in Running; Bump adds one to <see cref="MigrationState.MoveIndex"/>; Finish ends it with a reason.</summary>
public sealed class TestSagaStateMachine : MassTransitStateMachine<MigrationState>
{
    public TestSagaStateMachine(TestSagaOptions options)
    {
        InstanceState(s => s.CurrentState);

        Event(() => Start, e =>
        {
            e.CorrelateById(c => c.Message.MigrationId);
            e.InsertOnInitial = options.InsertOnInitial;
        });
        Event(() => Bump, e => e.CorrelateById(c => c.Message.MigrationId));
        Event(() => BumpOfDecision, e => e.CorrelateBy((s, c) => s.DecisionId == c.Message.DecisionId));
        Event(() => Finish, e => e.CorrelateById(c => c.Message.MigrationId));

        Initially(
            When(Start)
                .Then(c =>
                {
                    c.Saga.DecisionId = c.Message.DecisionId;
                    c.Saga.StartedAt = c.Saga.UpdatedAt = DateTimeOffset.UtcNow;
                })
                .TransitionTo(Running));

        During(Running,
            Ignore(Start),
            When(Bump).Then(c => c.Saga.MoveIndex++),
            When(BumpOfDecision).Then(c => c.Saga.MoveIndex++),
            When(Finish)
                .Then(c =>
                {
                    c.Saga.Reason = c.Message.Reason;
                    c.Saga.FinishedAt = c.Saga.UpdatedAt = DateTimeOffset.UtcNow;
                })
                .Finalize());

        if (options.DeleteWhenFinalized)
        {
            SetCompletedWhenFinalized();
        }
    }

    public State Running { get; private set; } = null!;

    public Event<StartTestSaga> Start { get; private set; } = null!;

    public Event<BumpTestSaga> Bump { get; private set; } = null!;

    public Event<BumpTestSagasOfDecision> BumpOfDecision { get; private set; } = null!;

    public Event<FinishTestSaga> Finish { get; private set; } = null!;
}

/// <summary>The saga endpoint as the coordinator configures it: concurrent, with retry and the in-memory outbox.</summary>
public sealed class TestSagaDefinition : SagaDefinition<MigrationState>
{
    public TestSagaDefinition()
    {
        ConcurrentMessageLimit = 16;
        Endpoint(e => e.PrefetchCount = 32);
    }

    protected override void ConfigureSaga(
        IReceiveEndpointConfigurator endpointConfigurator, ISagaConfigurator<MigrationState> sagaConfigurator, IRegistrationContext context)
    {
        endpointConfigurator.UseMessageRetry(r => r.Intervals(10, 50, 100, 200, 500, 1000));
        endpointConfigurator.UseInMemoryOutbox(context);
    }
}

/// <summary>Which test messages the saga endpoint consumed or failed, by saga id, and how many it handled at once.</summary>
public sealed class SagaObserver : IReceiveObserver
{
    private int _inFlight;
    private int _maxInFlight;

    public ConcurrentQueue<(Type MessageType, Guid Id, int RetryAttempt)> Consumed { get; } = new();

    public ConcurrentQueue<(Type MessageType, Guid Id, Exception Exception)> Faults { get; } = new();

    public int MaxInFlight => Volatile.Read(ref _maxInFlight);

    public Task PreReceive(ReceiveContext context)
    {
        var now = Interlocked.Increment(ref _inFlight);
        for (var max = Volatile.Read(ref _maxInFlight); now > max; max = Volatile.Read(ref _maxInFlight))
        {
            Interlocked.CompareExchange(ref _maxInFlight, now, max);
        }

        return Task.CompletedTask;
    }

    public Task PostReceive(ReceiveContext context)
    {
        Interlocked.Decrement(ref _inFlight);
        return Task.CompletedTask;
    }

    public Task ReceiveFault(ReceiveContext context, Exception exception)
    {
        Interlocked.Decrement(ref _inFlight);
        return Task.CompletedTask;
    }

    public Task PostConsume<T>(ConsumeContext<T> context, TimeSpan duration, string consumerType)
        where T : class
    {
        Consumed.Enqueue((typeof(T), IdOf(context.Message), context.GetRetryAttempt()));
        return Task.CompletedTask;
    }

    public Task ConsumeFault<T>(ConsumeContext<T> context, TimeSpan duration, string consumerType, Exception exception)
        where T : class
    {
        Faults.Enqueue((typeof(T), IdOf(context.Message), exception));
        return Task.CompletedTask;
    }

    public Task WaitForConsumedAsync<T>(Guid id, int count) =>
        CoordinatorFixture.WaitForAsync(
            () => Task.FromResult(Consumed.Count(c => c.MessageType == typeof(T) && c.Id == id) >= count ? (object)true : null),
            $"{count} {typeof(T).Name} for {id} are consumed");

    private static Guid IdOf(object message) => message switch
    {
        StartTestSaga m => m.MigrationId,
        BumpTestSaga m => m.MigrationId,
        FinishTestSaga m => m.MigrationId,
        _ => Guid.Empty,
    };
}
