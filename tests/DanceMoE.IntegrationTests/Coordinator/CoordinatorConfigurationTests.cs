using DanceMoE.Coordinator;

namespace DanceMoE.IntegrationTests.Coordinator;

public sealed class CoordinatorConfigurationTests
{
    [Fact]
    public void The_hosts_flags_set_the_same_keys_as_the_cli_verb()
    {
        var configuration = CoordinatorConfiguration.FromCommandLine(
            ["--algorithm", "optimal", "--layers", "2", "--experts", "4", "--drain-ms", "5", "--missed-heartbeats", "7"]);

        Assert.Equal("optimal", configuration["PlacementJob:Algorithm"]);
        Assert.Equal("2", configuration["PlacementJob:Layers"]);
        Assert.Equal("4", configuration["PlacementJob:Experts"]);
        Assert.Equal("5", configuration["Migration:DrainMilliseconds"]);
        Assert.Equal("7", configuration["Membership:MissedHeartbeats"]);
    }

    [Fact]
    public void A_model_directory_without_an_exported_model_is_refused()
    {
        var empty = Directory.CreateTempSubdirectory("dancemoe-coordinator-");
        try
        {
            Assert.Throws<DanceMoE.Model.ModelFormatException>(() => CoordinatorConfiguration.FromCommandLine(["--model", empty.FullName]));
        }
        finally
        {
            empty.Delete(recursive: true);
        }
    }
}
