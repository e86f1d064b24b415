using DanceMoE.Contracts;
using DanceMoE.Coordinator;

namespace DanceMoE.IntegrationTests.Coordinator;

public sealed class LaggingEdgeTests
{
    private static readonly ExpertAssignment[] Placement =
    [
        new() { Layer = 0, Expert = 0, Servers = ["edge-1", "edge-4"] },
        new() { Layer = 0, Expert = 1, Servers = ["edge-4"] },
    ];

    [Fact]
    public void A_placement_is_pushed_only_when_the_live_edges_hold_every_expert_of_it()
    {
        Assert.True(LaggingEdgeConsumer.IsServedBy(Placement, new HashSet<string> { "edge-1", "edge-4" }));
        Assert.True(LaggingEdgeConsumer.IsServedBy(Placement, new HashSet<string> { "edge-4" }));

        // edge-4 is gone (an earlier cluster's): expert 0.1 would have no replica, so the edge keeps what it has.
        Assert.False(LaggingEdgeConsumer.IsServedBy(Placement, new HashSet<string> { "edge-1", "edge-2", "edge-3" }));
    }
}
