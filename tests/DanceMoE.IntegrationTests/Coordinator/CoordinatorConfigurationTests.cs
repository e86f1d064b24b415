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

    [Theory]
    [InlineData("--layers 2 --expert 4", "unknown flag '--expert' (flags: --activation-timeout-s, --algorithm, --bandwidth-mbps, ")]
    [InlineData("--layers=2 --Experts=4", "unknown flag '--Experts' (flags: ")]
    [InlineData("--layers 2 /experts 4", "unexpected argument '/experts': each setting is a flag and its value (flags: ")]
    [InlineData("--layers 2 4", "unexpected argument '4': each setting is a flag and its value (flags: ")]
    [InlineData("--layers 2 --experts", "flag '--experts' has no value")]
    public void A_flag_the_host_does_not_know_is_refused_rather_than_dropped_without_a_word(string command, string error)
    {
        var refused = Assert.Throws<DanceMoE.Hosting.HostFlagException>(() => CoordinatorConfiguration.FromCommandLine(command.Split(' ')));

        Assert.StartsWith(error, refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Without_a_model_or_its_shape_the_host_says_what_to_give_instead_of_two_range_errors()
    {
        var refused = Assert.Throws<DanceMoE.Hosting.HostFlagException>(() => CoordinatorConfiguration.FromCommandLine(["--algorithm", "optimal"]));

        Assert.Equal("no model to plan for: give --model DIR (Model__Directory), or --layers, --experts, --top-k and --expert-bytes", refused.Message);
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

    [Theory]
    [InlineData("0 0 0 31 2 ? 2099", "never fires from now on")]
    [InlineData("0 0 0 1 1 ? 2020", "never fires from now on")]
    [InlineData("bogus", "is not a Quartz cron expression")]
    public void A_cron_the_job_could_not_be_scheduled_on_is_refused_at_validation(string cron, string problem)
    {
        var options = new PlacementJobOptions { Cron = cron, Layers = 2, Experts = 4 };
        var results = new List<System.ComponentModel.DataAnnotations.ValidationResult>();

        Assert.False(System.ComponentModel.DataAnnotations.Validator.TryValidateObject(options, new(options), results, validateAllProperties: true));
        Assert.Equal($"PlacementJob:Cron '{cron}' {problem}", Assert.Single(results).ErrorMessage);
    }

    [Fact]
    public void A_cron_that_fires_once_in_a_future_year_is_accepted()
    {
        var options = new PlacementJobOptions { Cron = "0 0 0 1 1 ? 2099", Layers = 2, Experts = 4 };

        Assert.True(System.ComponentModel.DataAnnotations.Validator.TryValidateObject(options, new(options), [], validateAllProperties: true));
    }
}
