using System.Collections.Concurrent;
using DanceMoE.Contracts;
using DanceMoE.Coordinator;
using MassTransit;
using Microsoft.EntityFrameworkCore;

namespace DanceMoE.IntegrationTests.Coordinator;

/// <summary>Pretend edges that also take loads and unloads: edge-a refuses every load, edge-b does them.</summary>
public sealed class RefusingLoadsFixture : ShiftFixture
{
    public ConcurrentQueue<(string Edge, string Command, int Layer, int Expert)> Commands { get; } = new();

    protected override void ConfigureEdge(IReceiveEndpointConfigurator endpoint, string edge)
    {
        base.ConfigureEdge(endpoint, edge);
        endpoint.Handler<LoadExpert>(context =>
        {
            Commands.Enqueue((edge, "load", context.Message.Layer, context.Message.Expert));
            return edge == "edge-a"
                ? throw new InvalidOperationException($"loading expert {context.Message.Layer}.{context.Message.Expert} would exceed the budget")
                : context.RespondAsync(new ExpertLoaded { CommandId = context.Message.CommandId, EdgeId = edge, Layer = context.Message.Layer, Expert = context.Message.Expert });
        });
        endpoint.Handler<UnloadExpert>(context =>
        {
            Commands.Enqueue((edge, "unload", context.Message.Layer, context.Message.Expert));
            return context.RespondAsync(new ExpertUnloaded { CommandId = context.Message.CommandId, EdgeId = edge, Layer = context.Message.Layer, Expert = context.Message.Expert });
        });
    }
}

public sealed class MigrationSagaTests(RefusingLoadsFixture fixture) : IClassFixture<RefusingLoadsFixture>
{
    [Fact]
    public async Task A_load_the_edge_refuses_fails_the_migration_undoes_its_loads_and_keeps_the_old_placement()
    {
        var (active, shifted) = await WorkloadShiftTests.ShiftAsync(fixture);
        Assert.Equal("migrate", shifted.Decision);
        // edge-a refuses at once, so the saga may have failed the decision before the test first reads it.
        Assert.True(shifted.Status is "pending-saga" or "migration-failed", shifted.Status);

        var migration = await CoordinatorFixture.WaitForAsync(
            async () =>
            {
                await using var db = fixture.Db();
                return await db.Migrations.AsNoTracking().SingleOrDefaultAsync(m => m.CorrelationId == shifted.MigrationId && (m.CurrentState == "Failed" || m.CurrentState == "Completed"));
            },
            "the migration ends");

        Assert.Equal("Failed", migration.CurrentState);
        Assert.Contains("would exceed the budget", migration.Reason, StringComparison.Ordinal);
        Assert.Contains($"the old placement v{active} stays active", migration.Reason, StringComparison.Ordinal);
        Assert.Null(migration.ActivatedVersion);
        Assert.Equal(active, (await fixture.Get<PlacementRegistry>().GetActiveAsync(CancellationToken.None))?.Version);
        await using (var db = fixture.Db())
        {
            Assert.Equal("migration-failed", (await db.PlacementDecisions.SingleAsync(d => d.Id == shifted.Id)).Status);
        }

        // Every load edge-b did for the migration is undone.
        var loadedOnB = fixture.Commands.Where(c => c is { Edge: "edge-b", Command: "load" }).Select(c => (c.Layer, c.Expert)).ToList();
        await CoordinatorFixture.WaitForAsync(
            () => Task.FromResult(loadedOnB.All(x => fixture.Commands.Contains(("edge-b", "unload", x.Layer, x.Expert))) ? (object)true : null),
            "edge-b unloads what it loaded");
        Assert.Contains(fixture.Commands, c => c is { Edge: "edge-a", Command: "load" });
    }
}
