using DanceMoE.Contracts;
using DanceMoE.Edge;
using DanceMoE.Hosting;

namespace DanceMoE.EndToEndTests;

public sealed class PlacementFromTheFutureTests
{
    [Fact]
    public async Task A_placement_dated_in_the_future_is_refused_and_does_not_block_the_next_genuine_one()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 53);
        var a = cluster.Manifest.Architecture;
        string[] edges = ["edge-1", "edge-2"];
        var uniform = PlacementFile.Uniform(1, a.NumLayers, a.NumExperts, edges);
        await cluster.StartEdgesAsync(edges, cluster.WritePlacement("uniform.json", uniform));
        var control = await cluster.Bus.GetSendEndpoint(EdgeQueues.ControlAddress("edge-1"));

        await control.Send(new PlacementActivated { Version = 99, Assignments = uniform.Assignments, ActivatedAt = DateTimeOffset.UtcNow.AddDays(1) });
        await control.Send(new PlacementActivated { Version = 2, Assignments = uniform.Assignments, ActivatedAt = DateTimeOffset.UtcNow });

        var version = 0;
        for (var attempt = 0; attempt < 40 && version != 2; attempt++)
        {
            version = (await cluster.GenerateAsync("edge-1", "which placement", 1)).Stats.PlacementVersion;
            await Task.Delay(250);
        }

        Assert.Equal(2, version);
        await cluster.LogUntilAsync("edge-1", "placement v99 is activated");
    }
}
