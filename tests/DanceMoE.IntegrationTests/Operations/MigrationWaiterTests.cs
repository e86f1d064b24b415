using DanceMoE.Data;
using DanceMoE.Migrations;
using DanceMoE.Operations;

namespace DanceMoE.IntegrationTests.Operations;

public sealed class MigrationWaiterTests(IsolatedDatabase database) : IClassFixture<IsolatedDatabase>, IAsyncLifetime
{
    public async Task InitializeAsync() =>
        await DatabaseMigrator.MigrateAsync(database.ConnectionString, TimeSpan.FromSeconds(10), CancellationToken.None);

    public Task DisposeAsync() => Task.CompletedTask;

    [Fact]
    public async Task A_finished_migration_ends_the_wait_with_its_row_which_progress_saw()
    {
        var decision = await InsertAsync(MigrationStateName.Completed, loadsDone: 3);
        var seen = new List<string>();

        var wait = await MigrationWaiter.WaitAsync(database.ConnectionString, decision, TimeSpan.FromSeconds(10), m => seen.Add(m.CurrentState), null, CancellationToken.None);

        Assert.Equal(MigrationWaitEnd.Finished, wait.End);
        Assert.Equal(3, wait.Last!.LoadsDone);
        Assert.Equal([MigrationStateName.Completed], seen);
    }

    [Fact]
    public async Task A_migration_still_running_when_the_wait_runs_out_ends_it_with_its_last_row()
    {
        var decision = await InsertAsync(MigrationStateName.Loading, loadsDone: 1);

        var wait = await MigrationWaiter.WaitAsync(database.ConnectionString, decision, TimeSpan.FromMilliseconds(300), null, null, CancellationToken.None);

        Assert.Equal(MigrationWaitEnd.TimedOut, wait.End);
        Assert.Equal(MigrationStateName.Loading, wait.Last!.CurrentState);
    }

    [Fact]
    public async Task The_check_runs_before_every_poll_and_ends_the_wait_when_it_throws()
    {
        var decision = await InsertAsync(MigrationStateName.Loading, loadsDone: 0);
        var polls = 0;
        void Check()
        {
            if (++polls == 3)
            {
                throw new InvalidOperationException("the coordinator exited");
            }
        }

        var error = await Assert.ThrowsAsync<InvalidOperationException>(
            () => MigrationWaiter.WaitAsync(database.ConnectionString, decision, TimeSpan.FromSeconds(30), null, Check, CancellationToken.None));

        Assert.Equal("the coordinator exited", error.Message);
    }

    [Fact]
    public async Task A_run_now_without_a_decision_in_time_fails_as_one_line()
    {
        var error = await Assert.ThrowsAsync<OperationException>(
            () => PlacementJobTrigger.WaitForDecisionAsync(database.ConnectionString, Guid.NewGuid(), TimeSpan.FromMilliseconds(300), null, CancellationToken.None));

        Assert.Equal(OperationFailure.Failed, error.Failure);
        Assert.Contains("no decision for run", error.Message, StringComparison.Ordinal);
    }

    /// <summary>A migration row for a decision id of its own; returns that id.</summary>
    private async Task<long> InsertAsync(string state, int loadsDone)
    {
        var decision = Random.Shared.NextInt64(1, long.MaxValue);
        var now = DateTimeOffset.UtcNow;
        await using var db = DanceMoEDbContext.Create(database.ConnectionString);
        db.Migrations.Add(new MigrationState
        {
            CorrelationId = Guid.NewGuid(),
            CurrentState = state,
            DecisionId = decision,
            FromVersion = 1,
            ToVersion = 2,
            LoadsDone = loadsDone,
            StartedAt = now,
            UpdatedAt = now,
            FinishedAt = MigrationStateName.IsFinal(state) ? now : null,
        });
        await db.SaveChangesAsync();
        return decision;
    }
}
