using DanceMoE.Operations;

namespace DanceMoE.IntegrationTests;

public sealed class CoreShareTests
{
    [Fact]
    public void Each_of_several_processes_gets_its_share_of_the_cores_and_at_least_one()
    {
        Assert.Equal(Environment.ProcessorCount, CliProcesses.CoreShare(1));
        Assert.Equal(Math.Max(1, Environment.ProcessorCount / 2), CliProcesses.CoreShare(2));
        Assert.Equal(1, CliProcesses.CoreShare(Environment.ProcessorCount + 1));
        Assert.Equal(Environment.ProcessorCount, CliProcesses.CoreShare(0));
    }

    [Fact]
    public void A_process_given_cores_sees_that_many_and_one_given_none_is_left_alone()
    {
        var operatorSetIt = Environment.GetEnvironmentVariable("DOTNET_PROCESSOR_COUNT");

        var shared = CliProcesses.StartInfo(["edge"], "edge.log", detached: false, serving: true, cores: 1);
        var whole = CliProcesses.StartInfo(["edge"], "edge.log", detached: false, serving: true);

        Assert.Equal(operatorSetIt ?? "1", shared.Environment["DOTNET_PROCESSOR_COUNT"]);
        Assert.Equal(operatorSetIt, whole.Environment.TryGetValue("DOTNET_PROCESSOR_COUNT", out var seen) ? seen : null);
    }
}
