using DanceMoE.Operations;
using DanceMoE.Placement;

namespace DanceMoE.IntegrationTests.Operations;

public sealed class PlacementSimulationTests
{
    private static readonly IPlacementAlgorithm[] Algorithms = [PlacementAlgorithms.Create("uniform"), PlacementAlgorithms.Create("dancemoe")];

    [Fact]
    public void A_synthetic_instance_reports_a_table_row_and_a_json_row_per_algorithm()
    {
        var simulation = PlacementSimulation.Synthetic(serverCount: 3, layers: 4, experts: 8, topK: 2, memory: 0.5, requests: 2, tokens: 16);

        var results = simulation.Solve(Algorithms, CancellationToken.None);

        Assert.StartsWith("bench: 3 servers x 4 layers x 8 experts (top-2), memory 50 %", simulation.Description, StringComparison.Ordinal);
        var table = PlacementReport.Table(results).ToList();
        Assert.StartsWith("algorithm ", table[0], StringComparison.Ordinal);
        Assert.Equal(["uniform", "dancemoe"], table.Skip(1).Select(line => line.Split(' ')[0]));
        Assert.Equal("dancemoe", PlacementReport.Row(results[1])["algorithm"]);
        Assert.DoesNotContain("migrate", PlacementReport.Row(results[1]).Keys);
    }

    [Fact]
    public void Migrating_to_the_same_placement_moves_nothing_and_is_not_worth_it()
    {
        var simulation = PlacementSimulation.Synthetic(serverCount: 3, layers: 4, experts: 8, topK: 2, memory: 0.5, requests: 2, tokens: 16);
        var results = simulation.Solve(Algorithms, CancellationToken.None);

        var migrations = simulation.Migrations(results, "uniform", horizon: 300);

        Assert.Equal(0, migrations["uniform"].Plan.Loads);
        Assert.False(migrations["uniform"].Decision.Migrate);
        Assert.Equal(false, PlacementReport.Row(results[0], migrations["uniform"])["migrate"]);
    }

    [Fact]
    public void The_plot_is_a_png()
    {
        var simulation = PlacementSimulation.Synthetic(serverCount: 2, layers: 2, experts: 4, topK: 1, memory: 0.5, requests: 1, tokens: 8);
        var results = simulation.Solve(Algorithms, CancellationToken.None);
        var path = Path.Combine(Path.GetTempPath(), $"dancemoe-plot-{Guid.NewGuid():N}.png");

        simulation.Plot(path, results);

        byte[] signature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0d, 0x0a, 0x1a, 0x0a];
        Assert.Equal(signature, File.ReadAllBytes(path)[..8]);
        File.Delete(path);
    }

    [Fact]
    public void A_missing_trace_directory_fails_as_one_line()
    {
        var spec = new SimulationSpec(["law"], 0.3, null, null, LinkSpec.FromMbps(500, 2), new LatencyOptions());

        var error = Assert.Throws<OperationException>(() => PlacementSimulation.FromTraces("/nonexistent/traces", null, spec));

        Assert.Equal("no trace directory /nonexistent/traces", error.Message);
    }
}
