using System.Diagnostics;

namespace DanceMoE.IntegrationTests;

public sealed class ComposeFileTests
{
    [Fact]
    public async Task The_compose_file_is_valid_for_docker_compose()
    {
        var (exitCode, _, errors) = await DockerComposeAsync("config -q");

        Assert.True(exitCode == 0, $"docker-compose config -q failed: {errors}");
    }

    [Fact]
    public async Task The_compose_file_has_the_broker_the_database_the_migrations_the_edges_and_the_coordinator()
    {
        var (exitCode, output, errors) = await DockerComposeAsync("--profile tools config --services");

        Assert.True(exitCode == 0, errors);
        Assert.Equal(
            ["client", "coordinator", "edge-1", "edge-2", "edge-3", "migrations", "postgres", "rabbitmq"],
            output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order());
    }

    private static async Task<(int ExitCode, string Output, string Errors)> DockerComposeAsync(string arguments)
    {
        var file = Path.Combine(RepositoryRoot(), "compose", "docker-compose.yml");
        var start = new ProcessStartInfo("docker-compose", $"-f \"{file}\" {arguments}")
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new InvalidOperationException("docker-compose is not installed: apt-get install -y --no-install-recommends docker-compose (./dancemoe test does it)", ex);
        }

        using (process)
        {
            var output = process.StandardOutput.ReadToEndAsync();
            var errors = process.StandardError.ReadToEndAsync();
            await process.WaitForExitAsync();
            return (process.ExitCode, await output, await errors);
        }
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
