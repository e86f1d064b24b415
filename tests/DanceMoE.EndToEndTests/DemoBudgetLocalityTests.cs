using DanceMoE.Lab.Demo;
using DanceMoE.Model;

namespace DanceMoE.EndToEndTests;

public sealed class DemoBudgetLocalityTests
{
    [Fact]
    public async Task At_the_demos_budget_smaller_experts_fit_more_per_edge_and_keep_more_calls_local()
    {
        var model = Path.Combine(RepositoryRoot(), "onnx", "default");

        var report = await DemoBudgetLocality.RunAsync(model, 256, CancellationToken.None);

        Assert.Equal(Enum.GetValues<ExpertWeightFormat>(), report.Rows.Select(r => r.Format));
        var fp32 = report.Rows[0];
        Assert.True(fp32.ExpertsPerEdge < report.RoutedExperts, "the demo's budget is meant to hold a share of the experts in fp32");
        Assert.InRange(fp32.ExpertsPerEdge * fp32.ExpertBytes, 1, (long)report.MemoryMb << 20);
        foreach (var (larger, smaller) in report.Rows.Zip(report.Rows.Skip(1)))
        {
            Assert.True(smaller.ExpertBytes < larger.ExpertBytes);
            Assert.True(smaller.ExpertsPerEdge >= larger.ExpertsPerEdge);
        }

        var int4 = report.Rows[^1];
        Assert.Equal(report.RoutedExperts, int4.ExpertsPerEdge);
        Assert.Equal(1.0, int4.LocalShare);
        Assert.True(fp32.LocalShare < 1.0);
    }

    internal static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "DanceMoE.Bus.sln")))
        {
            dir = dir.Parent;
        }

        return dir?.FullName ?? throw new InvalidOperationException("cannot find DanceMoE.Bus.sln above " + AppContext.BaseDirectory);
    }
}
