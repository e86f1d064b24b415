using DanceMoE.Contracts;
using DanceMoE.Coordinator;
using DanceMoE.Hosting;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Npgsql;
using Quartz;

namespace DanceMoE.IntegrationTests.Coordinator;

public sealed class PlacementJobFixture : IAsyncLifetime
{
    public CoordinatorFixture Coordinator { get; } = new();

    public async Task InitializeAsync()
    {
        await Coordinator.InitializeAsync();
        var now = DateTimeOffset.UtcNow;
        await Coordinator.SeedActivationsAsync(new DateTimeOffset(now.Year, now.Month, now.Day, now.Hour, now.Minute, 0, TimeSpan.Zero).AddMinutes(-2));
        await Coordinator.BeatAsync(now, ("edge-a", ["0:0", "0:1", "1:0", "1:1"]), ("edge-b", ["0:2", "0:3", "1:2", "1:3"]));
    }

    public Task DisposeAsync() => Coordinator.DisposeAsync();
}

public sealed class PlacementJobTests(PlacementJobFixture fixture) : IClassFixture<PlacementJobFixture>
{
    private CoordinatorFixture Coordinator => fixture.Coordinator;

    [Fact]
    public async Task The_job_records_a_decision_and_the_active_placement_keeps_each_edge_s_hot_experts_local()
    {
        var commandId = NewId.NextGuid();
        await TriggerAsync(commandId);

        var decision = await WaitForDecisionAsync(commandId);
        Assert.Equal("dancemoe", decision.Algorithm);
        Assert.Equal(CoordinatorFixture.EdgeIds, decision.Edges);
        Assert.True(decision.Decision is "migrate" or "stay", decision.Decision);
        Assert.NotNull(decision.CandidateVersion);
        Assert.NotNull(decision.CandidateCostSeconds);
        Assert.NotEmpty(decision.Reason);

        // Whichever run came first found no placement, registered what the edges hold as the bootstrap version, and the
        // candidate equals it.
        var first = (await Coordinator.DecisionsAsync())[0];
        Assert.Equal(("stay", "none"), (first.Decision, first.Status));
        Assert.Equal(first.CurrentVersion, first.CandidateVersion);

        var active = await Coordinator.Get<PlacementRegistry>().GetActiveAsync(CancellationToken.None);
        Assert.NotNull(active);
        Assert.Equal("bootstrap", active.Algorithm);
        foreach (var layer in new[] { 0, 1 })
        {
            Assert.Equal(["edge-a"], active.Assignments.Single(a => a.Layer == layer && a.Expert == 0).Servers);
            Assert.Equal(["edge-b"], active.Assignments.Single(a => a.Layer == layer && a.Expert == 3).Servers);
        }

        Assert.True(await Coordinator.Get<PlacementAcknowledgements>().WaitForAsync(active.Version, CoordinatorFixture.EdgeIds, TimeSpan.FromSeconds(60), CancellationToken.None));
    }

    [Fact]
    public async Task Run_now_on_the_coordinator_queue_triggers_exactly_one_run()
    {
        var before = (await Coordinator.DecisionsAsync()).Count;
        var commandId = NewId.NextGuid();
        var endpoint = await Coordinator.EdgeBus.GetSendEndpoint(ReplicatedQueues.SendAddress(RunPlacementNowConsumerDefinition.Queue));
        await endpoint.Send(new RunPlacementNow { CommandId = commandId, RequestedBy = "test", RequestedAt = DateTimeOffset.UtcNow });

        var decision = await WaitForDecisionAsync(commandId);
        Assert.Equal("run-now", decision.Trigger);
        var all = await Coordinator.DecisionsAsync();
        Assert.Single(all, d => d.CommandId == commandId);
        Assert.True(all.Count >= before + 1);
    }

    [Fact]
    public async Task Two_firings_at_once_run_one_after_the_other()
    {
        var runner = Coordinator.Get<PlacementRunner>();
        var first = NewId.NextGuid();
        var second = NewId.NextGuid();
        await using (var connection = new NpgsqlConnection(Coordinator.Database.ConnectionString))
        {
            await connection.OpenAsync();
            await using var transaction = await connection.BeginTransactionAsync();
            await using (var block = new NpgsqlCommand("LOCK TABLE activation_counts IN ACCESS EXCLUSIVE MODE", connection, transaction))
            {
                await block.ExecuteNonQueryAsync();
            }

            await TriggerAsync(first);
            await TriggerAsync(second);
            await CoordinatorFixture.WaitForAsync(() => WaitingOnLockAsync(), "a run waits on the locked activation_counts");
            Assert.Equal(1, runner.RunningRuns);
            await transaction.RollbackAsync();
        }

        await WaitForDecisionAsync(first);
        await WaitForDecisionAsync(second);
        Assert.Equal(1, runner.MaxConcurrentRuns);
    }

    private async Task TriggerAsync(Guid commandId)
    {
        var scheduler = await Coordinator.Get<ISchedulerFactory>().GetScheduler();
        await scheduler.TriggerJob(PlacementJob.Key, new JobDataMap { [PlacementJob.CommandIdKey] = commandId.ToString() });
    }

    private Task<Data.PlacementDecision> WaitForDecisionAsync(Guid commandId) =>
        CoordinatorFixture.WaitForAsync(
            async () =>
            {
                await using var db = Coordinator.Db();
                return await db.PlacementDecisions.AsNoTracking().SingleOrDefaultAsync(d => d.CommandId == commandId);
            },
            $"the run for {commandId} records its decision");

    private async Task<object?> WaitingOnLockAsync()
    {
        await using var connection = new NpgsqlConnection(Coordinator.Database.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE '%activation_counts%'", connection);
        return (long)(await command.ExecuteScalarAsync())! > 0 ? true : null;
    }
}
