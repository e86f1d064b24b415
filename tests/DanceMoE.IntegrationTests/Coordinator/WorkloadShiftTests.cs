using DanceMoE.Contracts;
using DanceMoE.Coordinator;
using DanceMoE.Data;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Quartz;

namespace DanceMoE.IntegrationTests.Coordinator;

/// <summary>Each edge has room for one expert more than it holds, so experts can move without losing a live copy.</summary>
public class ShiftFixture : CoordinatorFixture
{
    public override int Slots => 5;
}

/// <summary>Each edge has room for every expert and holds them all.</summary>
public sealed class RoomyFixture : CoordinatorFixture
{
    public override int Slots => 8;
}

/// <summary>Experts of 10 GB: moving any costs far more than the remote calls it would save over the horizon.</summary>
public sealed class HeavyExpertsFixture : ShiftFixture
{
    public override long ExpertBytes => 10_000_000_000;
}

public sealed class WorkloadShiftTests(ShiftFixture fixture) : IClassFixture<ShiftFixture>
{
    [Fact]
    public async Task A_shift_that_pays_off_is_a_migrate_decision_waiting_for_the_saga_and_the_old_placement_stays_active()
    {
        var (active, shifted) = await ShiftAsync(fixture);

        Assert.Equal(("migrate", "pending-saga"), (shifted.Decision, shifted.Status));
        Assert.Equal(active, shifted.CurrentVersion);
        Assert.NotEqual(active, shifted.CandidateVersion);
        Assert.True(shifted.Loads > 0, $"{shifted.Loads} loads");
        Assert.True(shifted.PredictedGainSeconds > 0, shifted.Reason);
        Assert.True(shifted.CandidateCostSeconds + shifted.MigrationCostSeconds < shifted.CurrentCostSeconds, shifted.Reason);
        Assert.Equal(active, (await fixture.Get<PlacementRegistry>().GetActiveAsync(CancellationToken.None))?.Version);
    }

    /// <summary>
    /// Activates edge-a = experts 0, 1 and edge-b = experts 2, 3 of each layer, as loaded, with history to match; then the
    /// two workloads swap and the job runs once.
    /// </summary>
    internal static async Task<(int Active, PlacementDecision Shifted)> ShiftAsync(CoordinatorFixture coordinator, bool everythingLoaded = false)
    {
        var registry = coordinator.Get<PlacementRegistry>();
        List<ExpertAssignment> split =
        [
            .. from layer in Enumerable.Range(0, 2)
               from expert in Enumerable.Range(0, 4)
               select new ExpertAssignment { Layer = layer, Expert = expert, Servers = [expert < 2 ? "edge-a" : "edge-b"] },
        ];
        var active = await registry.AddAsync("test", 0, "test", split, CancellationToken.None);
        await registry.ActivateAsync(active, CancellationToken.None);

        var now = DateTimeOffset.UtcNow;
        var minute = new DateTimeOffset(now.Year, now.Month, now.Day, now.Hour, now.Minute, 0, TimeSpan.Zero);
        string[] all = ["0:0", "0:1", "0:2", "0:3", "1:0", "1:1", "1:2", "1:3"];
        await coordinator.BeatAsync(now, ("edge-a", everythingLoaded ? all : ["0:0", "0:1", "1:0", "1:1"]), ("edge-b", everythingLoaded ? all : ["0:2", "0:3", "1:2", "1:3"]));
        await coordinator.SeedActivationsAsync(minute.AddMinutes(-20));
        await coordinator.SeedActivationsAsync(minute.AddMinutes(-1), swapped: true, scale: 100);

        var commandId = NewId.NextGuid();
        var scheduler = await coordinator.Get<ISchedulerFactory>().GetScheduler();
        await scheduler.TriggerJob(PlacementJob.Key, new JobDataMap { [PlacementJob.CommandIdKey] = commandId.ToString() });
        var shifted = await CoordinatorFixture.WaitForAsync(
            async () =>
            {
                await using var db = coordinator.Db();
                return await db.PlacementDecisions.AsNoTracking().SingleOrDefaultAsync(d => d.CommandId == commandId);
            },
            $"the run for {commandId} records its decision");
        return (active, shifted);
    }
}

public sealed class HeavyExpertShiftTests(HeavyExpertsFixture fixture) : IClassFixture<HeavyExpertsFixture>
{
    [Fact]
    public async Task A_shift_whose_migration_costs_more_than_it_saves_over_the_horizon_is_a_stay_decision()
    {
        var (active, shifted) = await WorkloadShiftTests.ShiftAsync(fixture);

        Assert.Equal(("stay", "none"), (shifted.Decision, shifted.Status));
        Assert.True(shifted.CandidateCostSeconds < shifted.CurrentCostSeconds, shifted.Reason);
        Assert.True(shifted.PredictedGainSeconds < 0, shifted.Reason);
        Assert.Contains("not worth moving", shifted.Reason, StringComparison.Ordinal);
        Assert.Equal(active, (await fixture.Get<PlacementRegistry>().GetActiveAsync(CancellationToken.None))?.Version);
    }
}

public sealed class LoadedShiftTests(RoomyFixture fixture) : IClassFixture<RoomyFixture>
{
    [Fact]
    public async Task A_migration_whose_experts_are_all_loaded_already_is_activated_and_acknowledged_by_every_edge()
    {
        var (previous, shifted) = await WorkloadShiftTests.ShiftAsync(fixture, everythingLoaded: true);

        Assert.Equal(("migrate", "activated"), (shifted.Decision, shifted.Status));
        Assert.Equal(previous, shifted.CurrentVersion);
        var active = await fixture.Get<PlacementRegistry>().GetActiveAsync(CancellationToken.None);
        Assert.Equal(shifted.CandidateVersion, active?.Version);
        Assert.True(await fixture.Get<PlacementAcknowledgements>().WaitForAsync(active!.Version, CoordinatorFixture.EdgeIds, TimeSpan.FromSeconds(60), CancellationToken.None));
    }
}
