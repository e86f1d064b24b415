using System.Diagnostics;
using System.Globalization;
using DanceMoE.IntegrationTests;

namespace DanceMoE.EndToEndTests;

/// <summary>What a demo leaves alone when a cluster it did not start is there.</summary>
public sealed class DemoBesideClusterTests
{
    [Fact]
    public async Task A_demo_refused_by_a_cluster_that_started_while_it_waited_for_the_cluster_lock_leaves_that_clusters_edges_running()
    {
        var database = new IsolatedDatabase();
        await database.InitializeAsync();
        await using var cluster = await EdgeCluster.CreateAsync(seed: 59);
        var environment = cluster.CliEnvironment();
        environment["ConnectionStrings__postgres"] = database.ConnectionString;
        var clusterDirectory = Path.Combine(environment["DANCEMOE_STATE"], "cluster");
        Directory.CreateDirectory(clusterDirectory);
        // Another cluster up holds the lock: the demo has found no cluster running and waits to start its own.
        var otherUp = new FileStream(Path.Combine(environment["DANCEMOE_STATE"], "cluster.lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        var start = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in (string[])[Path.Combine(AppContext.BaseDirectory, "dancemoe.dll"), "demo", "--no-services", "--model", cluster.ModelDirectory, "--max-tokens", "4"])
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var (name, value) in environment)
        {
            start.Environment[name] = value;
        }

        using var demo = Process.Start(start)!;
        // The other up's edge: its command line names this folder's ready file, as LocalCluster checks.
        using var otherEdge = Process.Start("/bin/sh", ["-c", "sleep 600; true", "sh", "--ready-file", Path.Combine(clusterDirectory, "edge-1.ready")]);
        try
        {
            var errors = demo.StandardError.ReadToEndAsync();
            var output = new List<string>();
            while (await demo.StandardOutput.ReadLineAsync() is { } line)
            {
                output.Add(line);
                if (line.Contains("waiting for another cluster up or down", StringComparison.Ordinal))
                {
                    await File.WriteAllTextAsync(Path.Combine(clusterDirectory, "edge-1.pid"), otherEdge.Id.ToString(CultureInfo.InvariantCulture));
                    await otherUp.DisposeAsync();
                }
            }

            await demo.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(120));
            var said = $"exit {demo.ExitCode}: {string.Join('\n', output)}\n{await errors}";
            Assert.True(demo.ExitCode == 1, said);
            Assert.Contains($"a cluster is already running (edge-1 pid {otherEdge.Id})", await errors, StringComparison.Ordinal);
            Assert.False(otherEdge.HasExited, $"the demo stopped an edge it did not start: {said}");
            Assert.True(File.Exists(Path.Combine(clusterDirectory, "edge-1.pid")), said);
        }
        finally
        {
            await otherUp.DisposeAsync();
            if (!demo.HasExited)
            {
                demo.Kill();
            }

            otherEdge.Kill(entireProcessTree: true);
            await database.DisposeAsync();
        }
    }
}
