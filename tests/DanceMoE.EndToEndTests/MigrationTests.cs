using Xunit.Abstractions;
using DanceMoE.Coordinator.Saga;
using Microsoft.EntityFrameworkCore;

namespace DanceMoE.EndToEndTests;

public sealed class MigrationTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_migration_under_continuous_requests_fails_none_changes_no_token_and_run_now_meanwhile_plans_nothing()
    {
        await using var scenario = await MigrationScenario.StartAsync(loadMsPerMb: 2000);
        using var stop = new CancellationTokenSource();
        var load = scenario.LoadAsync(stop.Token);
        await Task.Delay(1000);

        var decision = await scenario.RunPlacementNowOnceLoadedAsync();
        Assert.True(("migrate", "pending-saga") == (decision.Decision, decision.Status), $"{decision.Decision}, {decision.Status}: {decision.Reason}");
        var id = decision.MigrationId!.Value;
        await scenario.WaitForMigrationAsync(id, m => m.CurrentState is "Loading" or "Activating" or "Draining" or "Unloading", "the migration runs");
        var meanwhile = await scenario.RunPlacementNowAsync();
        var migration = await scenario.WaitForMigrationAsync(id, m => m.CurrentState is "Completed" or "Failed", "the migration ends");
        await Task.Delay(1500);
        await stop.CancelAsync();
        var results = await load;

        output.WriteLine($"{decision.Reason}\nmigration {migration.CurrentState}: {migration.LoadsDone} loads, {migration.UnloadsDone} unloads, "
            + $"{migration.FinishedAt - migration.StartedAt}, {results.Count} requests, last version activated v{migration.ActivatedVersion}");
        Assert.True(migration.CurrentState == "Completed", $"{migration.CurrentState}: {migration.Reason}\n{MigrationScenario.Tail(scenario.Coordinator.Log())}");
        Assert.True(migration.LoadsDone > 0, $"{migration.LoadsDone} loads");
        // The edges' metrics show the rebalancing: what the saga loaded and dropped (a retried command may load again), none now.
        Assert.InRange(await scenario.EdgesMetricAsync("dancemoe_expert_loads_total{outcome=\"loaded\"}"), migration.LoadsDone, migration.LoadsDone + migration.Retries);
        Assert.Equal(0, await scenario.EdgesMetricAsync("dancemoe_expert_loads_total{outcome=\"failed\"}"));
        Assert.InRange(await scenario.EdgesMetricAsync("dancemoe_expert_unloads_total"), migration.UnloadsDone - migration.Retries, migration.UnloadsDone);
        Assert.Equal(0, await scenario.EdgesMetricAsync("dancemoe_expert_loads_in_progress"));
        Assert.Equal(("skipped", "none"), (meanwhile.Decision, meanwhile.Status));
        Assert.Contains("still running", meanwhile.Reason, StringComparison.Ordinal);
        await using (var db = scenario.Db())
        {
            Assert.Equal(1, await db.Migrations.CountAsync());
            Assert.Equal("migrated", (await db.PlacementDecisions.SingleAsync(d => d.Id == decision.Id)).Status);
        }

        Assert.Equal(decision.CandidateVersion, await scenario.ActiveVersionAsync());
        Assert.Empty(results.Where(r => r.Error is not null).Select(r => $"{r.Edge}: {r.Error!.Message}"));
        Assert.All(results, r => Assert.Equal(scenario.Oracle[r.Prompt], r.Answer!.TokenIds));
        Assert.Contains(results, r => r.Answer!.Stats.PlacementVersion == decision.CandidateVersion);

        using var status = await scenario.StatusAsync();
        var migrations = status.RootElement.GetProperty("migrations");
        Assert.Equal((0, 1, 0), (migrations.GetProperty("running").GetInt32(), migrations.GetProperty("completed").GetInt32(), migrations.GetProperty("failed").GetInt32()));
        Assert.Equal(id, migrations.GetProperty("latest")[0].GetProperty("id").GetGuid());
        Assert.Equal(migration.LoadsDone, migrations.GetProperty("latest")[0].GetProperty("loads").GetInt32());
        Assert.Equal(decision.CandidateVersion, status.RootElement.GetProperty("active_placement").GetProperty("version").GetInt32());
        // Each edge's heartbeats said what it computes on (no --compute-class given: the CPU's model and its cores).
        Assert.All(status.RootElement.GetProperty("edges").EnumerateArray(), e => Assert.Matches(@"^cpu: \S.* x [1-9][0-9]*$", e.GetProperty("compute_class").GetString()));
        Assert.True(results.Count >= 6, $"only {results.Count} requests during the run");
        Assert.Empty(scenario.InvariantViolations);
    }

    [Fact]
    public async Task The_target_edge_killed_while_loading_is_compensated_and_the_old_placement_stays_active()
    {
        await using var scenario = await MigrationScenario.StartAsync(loadMsPerMb: 4000, "--load-timeout-s", "4", "--migration-retries", "1");
        var decision = await scenario.RunPlacementNowAsync();
        Assert.Equal(("migrate", "pending-saga"), (decision.Decision, decision.Status));
        var id = decision.MigrationId!.Value;
        var loading = await scenario.WaitForMigrationAsync(id, m => m.CurrentState == "Loading", "the migration loads an expert");
        var target = MigrationProgress.Moves(loading.Moves)[loading.MoveIndex].EdgeId;

        scenario.Cluster.Kill(target);
        var migration = await scenario.WaitForMigrationAsync(id, m => m.CurrentState is "Completed" or "Failed", "the migration ends");

        Assert.True(migration.CurrentState == "Failed", $"{migration.CurrentState}: {migration.Reason}");
        Assert.Contains("got no answer", migration.Reason, StringComparison.Ordinal);
        Assert.Contains($"the old placement v{decision.CurrentVersion} stays active", migration.Reason, StringComparison.Ordinal);
        Assert.Null(migration.ActivatedVersion);
        Assert.Equal(decision.CurrentVersion, await scenario.ActiveVersionAsync());
        await using (var db = scenario.Db())
        {
            Assert.Equal("migration-failed", (await db.PlacementDecisions.SingleAsync(d => d.Id == decision.Id)).Status);
        }

        // The target back from its bootstrap file: the old placement serves with the oracle's tokens.
        await scenario.RestartEdgeAsync(target);
        foreach (var edge in MigrationScenario.Edges)
        {
            var answer = await scenario.Cluster.GenerateAsync(edge, MigrationScenario.Prompts[0], MigrationScenario.MaxTokens);
            Assert.Equal(scenario.Oracle[MigrationScenario.Prompts[0]], answer.TokenIds);
            Assert.Equal(decision.CurrentVersion, answer.Stats.PlacementVersion);
        }
    }

    [Fact]
    public async Task The_coordinator_killed_mid_migration_resumes_it_after_a_restart_and_finishes_it()
    {
        await using var scenario = await MigrationScenario.StartAsync(loadMsPerMb: 3000);
        using var stop = new CancellationTokenSource();
        var load = scenario.LoadAsync(stop.Token);
        var decision = await scenario.RunPlacementNowAsync();
        Assert.Equal(("migrate", "pending-saga"), (decision.Decision, decision.Status));
        var id = decision.MigrationId!.Value;
        await scenario.WaitForMigrationAsync(id, m => m.CurrentState == "Loading" && m.LoadsDone >= 1, "the migration has loaded an expert and loads the next");

        await scenario.Coordinator.KillAsync();
        var frozen = await scenario.MigrationAsync(id);
        await Task.Delay(2000);
        await scenario.Coordinator.StartAsync();
        var migration = await scenario.WaitForMigrationAsync(id, m => m.CurrentState is "Completed" or "Failed", "the migration ends after the restart");
        await stop.CancelAsync();
        var results = await load;

        Assert.True(frozen!.CurrentState == "Loading", $"the saga was {frozen.CurrentState} when the coordinator died");
        Assert.True(migration.CurrentState == "Completed", $"{migration.CurrentState}: {migration.Reason}\n{MigrationScenario.Tail(scenario.Coordinator.Log())}");
        Assert.True(migration.LoadsDone > frozen.LoadsDone, $"loads {frozen.LoadsDone} before the kill, {migration.LoadsDone} at the end");
        Assert.Equal(decision.CandidateVersion, await scenario.ActiveVersionAsync());
        Assert.Empty(results.Where(r => r.Error is not null).Select(r => $"{r.Edge}: {r.Error!.Message}"));
        Assert.All(results, r => Assert.Equal(scenario.Oracle[r.Prompt], r.Answer!.TokenIds));
        Assert.Empty(scenario.InvariantViolations);

        // An edge restarted from its bootstrap file is brought up to the active placement by the coordinator.
        scenario.Cluster.Kill("edge-1");
        await scenario.RestartEdgeAsync("edge-1");
        var prompt = MigrationScenario.Prompts[1];
        var caughtUp = await scenario.WaitForAsync(
            async () => await scenario.Cluster.GenerateAsync("edge-1", prompt, MigrationScenario.MaxTokens) is var a && a.Stats.PlacementVersion == decision.CandidateVersion ? a : null,
            "the restarted edge routes by the active placement");
        Assert.Equal(scenario.Oracle[prompt], caughtUp.TokenIds);
        Assert.True(caughtUp.Stats.LocalExpertCalls > 0, $"{caughtUp.Stats}");
    }
}
