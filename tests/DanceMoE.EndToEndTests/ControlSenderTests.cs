using DanceMoE.Contracts;
using DanceMoE.Edge;
using DanceMoE.Hosting;

namespace DanceMoE.EndToEndTests;

public sealed class ControlSenderTests
{
    [Fact]
    public async Task An_edge_refuses_a_placement_whose_user_id_is_not_the_coordinators_and_takes_the_same_one_from_the_coordinator()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 61);
        var a = cluster.Manifest.Architecture;
        var uniform = PlacementFile.Uniform(1, a.NumLayers, a.NumExperts, ["edge-1", "edge-2"]);
        var bootstrap = cluster.WritePlacement("uniform.json", uniform);
        var testUser = cluster.CoordinatorUser;

        // edge-1 takes control only from another user; the test's bus stamps its own user on every message it sends.
        cluster.CoordinatorUser = BusRoles.UserOf(BusRole.Coordinator);
        await cluster.StartEdgesAsync(["edge-1"], bootstrap);
        cluster.CoordinatorUser = testUser;
        await cluster.StartEdgesAsync(["edge-2"], bootstrap);

        var placement = new PlacementActivated { Version = 2, Assignments = uniform.Assignments, ActivatedAt = DateTimeOffset.UtcNow };
        foreach (var edge in new[] { "edge-1", "edge-2" })
        {
            var control = await cluster.Bus.GetSendEndpoint(EdgeQueues.ControlAddress(edge));
            await control.Send(placement);
        }

        var edge2Version = 0;
        for (var attempt = 0; attempt < 40 && edge2Version != 2; attempt++)
        {
            edge2Version = (await cluster.GenerateAsync("edge-2", "which placement", 1)).Stats.PlacementVersion;
            await Task.Delay(250);
        }

        await cluster.LogUntilAsync("edge-1", $"refused: sent by RabbitMQ user '{testUser}', not the coordinator's '{BusRoles.UserOf(BusRole.Coordinator)}'");

        Assert.Equal(2, edge2Version);
        Assert.Equal(1, (await cluster.GenerateAsync("edge-1", "which placement", 1)).Stats.PlacementVersion);
    }
}
