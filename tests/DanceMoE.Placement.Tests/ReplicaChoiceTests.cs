namespace DanceMoE.Placement.Tests;

/// <summary>The replica rule the model and the planner share.</summary>
public sealed class ReplicaChoiceTests
{
    // Three servers, home 0: the link to server 1 is fast to open, the one to server 2 slow; rows cost the same on both.
    private static readonly double[] LinkFixed = [0, 1.0, 3.0, 1.0, 0, 1.0, 3.0, 1.0, 0];
    private static readonly double[] LinkPerRow = [0, 0.5, 0.5, 0.5, 0, 0.5, 0.5, 0.5, 0];

    [Fact]
    public void An_expert_goes_to_the_holder_whose_call_costs_least_with_its_rows_and_is_charged_there()
    {
        Span<double> cost = stackalloc double[3];
        Span<bool> used = stackalloc bool[3];

        // 8 rows: server 1 would cost 1 + 4 = 5, server 2 3 + 4 = 7.
        Assert.Equal(1, ReplicaChoice.Pick(0b110, 0, 8, LinkFixed, LinkPerRow, cost, used));
        Assert.Equal(5.0, cost[1]);
        Assert.True(used[1]);

        // 4 more rows: server 1 would reach 7, server 2 only 3 + 2 = 5.
        Assert.Equal(2, ReplicaChoice.Pick(0b110, 0, 4, LinkFixed, LinkPerRow, cost, used));
        Assert.Equal(5.0, cost[2]);
    }

    [Fact]
    public void Equal_costs_go_to_a_peer_the_step_already_calls()
    {
        Span<double> cost = stackalloc double[3];
        Span<bool> used = stackalloc bool[3];

        // Server 1 would cost 1 + 1, server 2 3 + 1.
        Assert.Equal(1, ReplicaChoice.Pick(0b110, 0, 2, LinkFixed, LinkPerRow, cost, used));

        // Links alike; server 2 already called at 1.0, server 1 not: both would cost 2.0 after 2 rows, and the call already made takes them.
        double[] alike = [0, 1.0, 1.0, 1.0, 0, 1.0, 1.0, 1.0, 0];
        Span<double> calls = [0, 0, 1.0];
        Span<bool> called = [false, false, true];
        Assert.Equal(2, ReplicaChoice.Pick(0b110, 0, 2, alike, LinkPerRow, calls, called));
        Assert.Equal(2.0, calls[2]);
    }

    [Fact]
    public void An_expert_no_other_server_holds_is_a_clear_error()
    {
        var cost = new double[3];
        var used = new bool[3];
        var error = Assert.Throws<InvalidOperationException>(() => ReplicaChoice.Pick(0b001, 0, 1, LinkFixed, LinkPerRow, cost, used));
        Assert.Contains("no replica on another server", error.Message, StringComparison.Ordinal);
    }
}
