namespace DanceMoE.Placement.Tests;

public class PlacementAlgorithmsTests
{
    [Fact]
    public void Every_name_creates_the_algorithm_of_that_name()
    {
        foreach (var name in PlacementAlgorithms.Names)
        {
            Assert.Equal(name, PlacementAlgorithms.Create(name).Name);
        }

        Assert.Equal(PlacementAlgorithms.Names, PlacementAlgorithms.All.Select(a => a.Name));
        Assert.Subset(PlacementAlgorithms.Names.ToHashSet(), PlacementAlgorithms.CountsOnly.ToHashSet());
        Assert.DoesNotContain("latency", PlacementAlgorithms.CountsOnly);
    }

    [Fact]
    public void An_unknown_name_is_refused_with_the_known_ones()
    {
        var ex = Assert.Throws<ArgumentException>(() => PlacementAlgorithms.Create("nope"));

        Assert.StartsWith("unknown algorithm 'nope' (known: uniform, redundance, eplb, dancemoe, optimal, latency)", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_chosen_list_is_spelled_as_the_names_and_refuses_unknown_or_repeated_names_in_any_case()
    {
        Assert.Equal(["eplb", "latency"], PlacementAlgorithms.Chosen(["EPLB", "Latency"]));

        Assert.Equal("algorithm eplb is listed twice", Assert.Throws<ArgumentException>(() => PlacementAlgorithms.Chosen(["eplb", "EPLB"])).Message);
        Assert.StartsWith("unknown algorithm 'nope' (known: ", Assert.Throws<ArgumentException>(() => PlacementAlgorithms.Chosen(["eplb", "nope"])).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_cancelled_token_stops_every_algorithm()
    {
        var problem = Instances.Random(1);
        foreach (var algorithm in PlacementAlgorithms.All)
        {
            Assert.ThrowsAny<OperationCanceledException>(() => algorithm.Place(problem, new CancellationToken(canceled: true)));
        }
    }

    [Fact]
    public void The_same_instance_gives_the_same_placement_and_proof_on_every_call()
    {
        var optimal = new OptimalPlacement();
        var unequal = Instances.Random(3, unequalSizes: true);
        var equal = Instances.Random(3);

        var first = optimal.Solve(unequal);
        optimal.Solve(equal);
        var again = optimal.Solve(unequal);

        Assert.True(first.Placement.SameAs(again.Placement));
        Assert.Equal(first.ProvedOptimal, again.ProvedOptimal);
    }
}
