using DanceMoE.Contracts;
using DanceMoE.Coordinator;
using Microsoft.EntityFrameworkCore;

namespace DanceMoE.IntegrationTests.Coordinator;

public sealed class PlacementRegistryTests(CoordinatorFixture fixture) : IClassFixture<CoordinatorFixture>
{
    [Fact]
    public async Task The_registry_keeps_exactly_one_active_version_and_collects_every_edge_acknowledgement()
    {
        var registry = fixture.Get<PlacementRegistry>();
        var versions = new List<int>();
        for (var i = 0; i < 4; i++)
        {
            versions.Add(await registry.AddAsync("uniform", i, $"test-{i}", Split(i % 2 == 0), CancellationToken.None));
        }

        Assert.Equal(versions.Order(), versions);
        Assert.Equal(4, versions.Distinct().Count());

        await registry.ActivateAsync(versions[0], CancellationToken.None);
        await registry.ActivateAsync(versions[1], CancellationToken.None);
        await Task.WhenAll(versions.Skip(2).Select(v => registry.ActivateAsync(v, CancellationToken.None)));

        await using (var db = fixture.Db())
        {
            var active = await db.Placements.AsNoTracking().Where(p => p.IsActive).ToListAsync();
            var single = Assert.Single(active);
            Assert.Contains(single.Version, versions.Skip(2));
            Assert.NotNull(single.ActivatedAt);
        }

        var current = await registry.GetActiveAsync(CancellationToken.None);
        Assert.NotNull(current);
        Assert.Equal(8, current.Assignments.Count);

        var acknowledged = await fixture.Get<PlacementAcknowledgements>()
            .WaitForAsync(current.Version, CoordinatorFixture.EdgeIds, TimeSpan.FromSeconds(60), CancellationToken.None);
        Assert.True(acknowledged, "both edges acknowledge the active version");
    }

    [Fact]
    public async Task Activating_a_version_that_does_not_exist_fails_and_keeps_the_active_one()
    {
        var registry = fixture.Get<PlacementRegistry>();
        var version = await registry.AddAsync("uniform", 1, "test", Split(true), CancellationToken.None);
        await registry.ActivateAsync(version, CancellationToken.None);

        await Assert.ThrowsAsync<InvalidOperationException>(() => registry.ActivateAsync(version + 1000, CancellationToken.None));

        Assert.Equal(version, (await registry.GetActiveAsync(CancellationToken.None))?.Version);
    }

    private static List<ExpertAssignment> Split(bool aFirst) =>
        [.. from layer in Enumerable.Range(0, 2)
            from expert in Enumerable.Range(0, 4)
            select new ExpertAssignment { Layer = layer, Expert = expert, Servers = [(expert < 2) == aFirst ? "edge-a" : "edge-b"] }];
}
