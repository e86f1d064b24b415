using System.Globalization;
using DanceMoE.Model;
using DanceMoE.Model.Onnx;
using DanceMoE.Operations;

namespace DanceMoE.EndToEndTests;

/// <summary>What <c>cluster up</c> and <c>cluster down</c> promise an operator when two run at once on one machine.</summary>
public sealed class LocalClusterTests
{
    [Fact]
    public async Task Two_cluster_ups_at_once_start_one_cluster_the_other_is_told_it_runs_and_down_leaves_no_edge_running()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 47);
        var environment = cluster.CliEnvironment();
        string[] up = ["cluster", "up", "--edges", "2", "--model", cluster.ModelDirectory, "--provider", "cpu", "--no-traces", "--memory-mb", "256"];
        try
        {
            var runs = await Task.WhenAll(
                CommandLineTests.RunAsync(up, environment, TimeSpan.FromMinutes(2)),
                CommandLineTests.RunAsync(up, environment, TimeSpan.FromMinutes(2)));

            var said = string.Join("\n", runs.Select(r => $"exit {r.ExitCode}: {r.Output}{r.Errors}"));
            Assert.True(runs.Count(r => r.ExitCode == 0) == 1, said);
            var refused = runs.Single(r => r.ExitCode != 0);
            Assert.Contains("a cluster is already running (edge-1 pid ", refused.Errors, StringComparison.Ordinal);
            Assert.Equal(2, EdgeProcessesOn(cluster.ModelDirectory).Count);

            var (downExit, downOutput, downErrors) = await CommandLineTests.RunAsync(["cluster", "down"], environment);
            Assert.True(downExit == 0, $"cluster down exited {downExit}: {downOutput}\n{downErrors}");
            Assert.Empty(EdgeProcessesOn(cluster.ModelDirectory));
        }
        finally
        {
            await CommandLineTests.RunAsync(["cluster", "down"], environment);
            foreach (var pid in EdgeProcessesOn(cluster.ModelDirectory))
            {
                using var orphan = System.Diagnostics.Process.GetProcessById(pid);
                orphan.Kill();
            }
        }
    }

    [Fact]
    public async Task A_pid_file_whose_number_now_belongs_to_another_process_is_down_and_down_leaves_that_process_alone()
    {
        var state = Path.Combine(Path.GetTempPath(), $"dancemoe-pid-reuse-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Path.Combine(state, "cluster"));
        using var stranger = System.Diagnostics.Process.Start("sleep", ["60"]);
        try
        {
            await File.WriteAllTextAsync(Path.Combine(state, "cluster", "edge-1.pid"), stranger.Id.ToString(System.Globalization.CultureInfo.InvariantCulture));
            var environment = new Dictionary<string, string> { ["DANCEMOE_STATE"] = state };

            var (statusExit, statusOutput, statusErrors) = await CommandLineTests.RunAsync(["cluster", "status"], environment);
            Assert.True(statusExit == 0, statusErrors);
            Assert.StartsWith($"edge-1 pid {stranger.Id} down", statusOutput, StringComparison.Ordinal);

            var (downExit, _, downErrors) = await CommandLineTests.RunAsync(["cluster", "down"], environment);
            Assert.True(downExit == 0, downErrors);
            Assert.False(stranger.HasExited, "cluster down signalled a process that is no edge of its cluster");
            Assert.False(File.Exists(Path.Combine(state, "cluster", "edge-1.pid")));
        }
        finally
        {
            stranger.Kill();
            Directory.Delete(state, recursive: true);
        }
    }

    [Fact]
    public async Task Pid_files_that_are_a_fifo_an_endless_device_or_garbage_name_no_edge_and_down_clears_them()
    {
        var state = Path.Combine(Path.GetTempPath(), $"dancemoe-odd-pids-{Guid.NewGuid():N}");
        var cluster = Path.Combine(state, "cluster");
        Directory.CreateDirectory(cluster);
        try
        {
            using (var mkfifo = System.Diagnostics.Process.Start("mkfifo", [Path.Combine(cluster, "edge-1.pid")]))
            {
                await mkfifo.WaitForExitAsync();
            }

            File.CreateSymbolicLink(Path.Combine(cluster, "edge-2.pid"), "/dev/zero");
            await File.WriteAllTextAsync(Path.Combine(cluster, "edge-3.pid"), "garbage");
            await File.WriteAllTextAsync(Path.Combine(cluster, "edge-4.pid"), "-1");
            var environment = new Dictionary<string, string> { ["DANCEMOE_STATE"] = state };

            var (statusExit, statusOutput, statusErrors) = await CommandLineTests.RunAsync(["cluster", "status", "--json"], environment, TimeSpan.FromSeconds(20));
            Assert.True(statusExit == 0, statusErrors);
            Assert.Equal("[]", statusOutput.Trim());

            var (downExit, downOutput, downErrors) = await CommandLineTests.RunAsync(["cluster", "down"], environment, TimeSpan.FromSeconds(20));
            Assert.True(downExit == 0, downErrors);
            Assert.Equal("no edge was running", downOutput.Trim());
            Assert.Empty(Directory.GetFileSystemEntries(cluster, "*.pid"));
        }
        finally
        {
            Directory.Delete(state, recursive: true);
        }
    }

    [Fact]
    public async Task A_metrics_port_base_from_the_environment_out_of_range_is_one_usage_line_before_anything_starts()
    {
        var line = await CommandLineTests.OneErrorLineAsync(2,
            ["cluster", "up", "--edges", "2", "--model", "/nonexistent"], new Dictionary<string, string> { ["DANCEMOE_METRICS_PORT_BASE"] = "65535" });

        Assert.Equal(
            "dancemoe cluster up: --metrics-port-base 65535 (default $DANCEMOE_METRICS_PORT_BASE, else 9470) gives 2 edges ports outside 1024 to 65535 (see dancemoe cluster up --help)",
            line);
    }

    [Fact]
    public async Task More_threads_than_each_edge_sees_of_the_cores_is_one_usage_line_before_anything_starts()
    {
        // Each edge is told its share of the cores and refuses a larger pool; with one more edge than cores, the share is one.
        var edges = Environment.ProcessorCount + 1;

        var line = await CommandLineTests.OneErrorLineAsync(2,
            ["cluster", "up", "--edges", edges.ToString(CultureInfo.InvariantCulture), "--threads", "2", "--model", "/nonexistent"]);

        Assert.Equal(
            $"dancemoe cluster up: --threads 2: each of the {edges} edges sees 1 of this machine's {Environment.ProcessorCount} cores and takes at most that many intra-op threads (see dancemoe cluster up --help)",
            line);
    }

    [Theory]
    [InlineData("INT")]
    [InlineData("TERM")]
    public async Task A_cluster_up_interrupted_while_its_edges_start_stops_them_and_exits_cancelled(string signal)
    {
        await using var up = ClusterUpAgainstASilentBroker.Start();
        var errors = new List<string>();
        while (await up.Process.StandardError.ReadLineAsync() is { } line)
        {
            errors.Add(line);
            if (line.Contains("waiting until they serve", StringComparison.Ordinal))
            {
                Assert.Equal(2, EdgeProcessesOn(up.Model).Count);
                LocalCluster.Signal(signal, up.Process.Id);
            }
        }

        await up.Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        var said = $"exit {up.Process.ExitCode}: {string.Join('\n', errors)}";
        Assert.True(up.Process.ExitCode == 130, said);
        Assert.Equal("dancemoe cluster: cancelled", errors[^1]);
        Assert.Empty(EdgeProcessesOn(up.Model));
        Assert.Empty(Directory.GetFiles(Path.Combine(up.Directory, "state", "cluster"), "*.pid"));
    }

    /// <summary>
    /// A second signal while the command cleans up ends it at once, as an operator who pressed Ctrl-C twice expects: here
    /// the edges are stopped (SIGSTOP), so cleaning up would wait 20 s for them before it killed them.
    /// </summary>
    [Theory]
    [InlineData("INT", 130)]
    [InlineData("TERM", 143)]
    public async Task A_second_signal_while_cluster_up_cleans_up_exits_at_once_and_leaves_its_edges(string signal, int exitCode)
    {
        await using var up = ClusterUpAgainstASilentBroker.Start();
        var errors = new List<string>();
        while (await up.Process.StandardError.ReadLineAsync() is { } line)
        {
            errors.Add(line);
            if (line.Contains("waiting until they serve", StringComparison.Ordinal))
            {
                foreach (var pid in EdgeProcessesOn(up.Model))
                {
                    LocalCluster.Signal("STOP", pid);
                }

                LocalCluster.Signal(signal, up.Process.Id);
            }
            else if (line.Contains("a second signal exits without cleaning up", StringComparison.Ordinal))
            {
                LocalCluster.Signal(signal, up.Process.Id);
            }
        }

        await up.Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        var said = $"exit {up.Process.ExitCode}: {string.Join('\n', errors)}";
        Assert.Contains($"dancemoe cluster: SIG{signal}: stopping (a second signal exits without cleaning up)...", errors);
        Assert.Equal($"dancemoe cluster: SIG{signal} again: exiting without cleaning up", errors[^1]);
        // The signal's own exit status (128 + its number), as the shell reports a process the signal ended.
        Assert.True(up.Process.ExitCode == exitCode, said);
        // Cleaning up would have killed them: the process ended before it did.
        Assert.Equal(2, EdgeProcessesOn(up.Model).Count);
    }

    /// <summary>
    /// <c>cluster up --edges 2</c> with a broker that takes the connection and never answers: the edges live but never
    /// serve, so up is always waiting for them. Dispose kills whatever is left and deletes the folder.
    /// </summary>
    private sealed class ClusterUpAgainstASilentBroker : IAsyncDisposable
    {
        private readonly System.Net.Sockets.TcpListener _broker = new(System.Net.IPAddress.Loopback, 0);

        private ClusterUpAgainstASilentBroker()
        {
            TinyCheckpoint.Write(Path.Combine(Directory, "ckpt"), new TinyOptions { Seed = 53 });
            OnnxExporter.Export(Checkpoint.Open(Path.Combine(Directory, "ckpt")), Model, TensorDtype.F32);
            _broker.Start();
        }

        public string Directory { get; } = Path.Combine(Path.GetTempPath(), $"dancemoe-up-cancelled-{Guid.NewGuid():N}");

        public string Model => Path.Combine(Directory, "onnx");

        public System.Diagnostics.Process Process { get; private set; } = null!;

        public static ClusterUpAgainstASilentBroker Start()
        {
            var up = new ClusterUpAgainstASilentBroker();
            var start = new System.Diagnostics.ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
            start.Environment["DANCEMOE_STATE"] = Path.Combine(up.Directory, "state");
            start.Environment["ConnectionStrings__rabbitmq"] = $"amqp://nobody:nothing@127.0.0.1:{((System.Net.IPEndPoint)up._broker.LocalEndpoint).Port}/";
            foreach (var argument in (string[])[Path.Combine(AppContext.BaseDirectory, "dancemoe.dll"), "cluster", "up", "--edges", "2", "--model", up.Model,
                "--provider", "cpu", "--no-traces", "--memory-mb", "256", "--metrics-port-base", TwoFreePorts().ToString(System.Globalization.CultureInfo.InvariantCulture)])
            {
                start.ArgumentList.Add(argument);
            }

            up.Process = System.Diagnostics.Process.Start(start)!;
            // Read, so a full pipe never blocks it.
            _ = up.Process.StandardOutput.ReadToEndAsync();
            return up;
        }

        public async ValueTask DisposeAsync()
        {
            if (!Process.HasExited)
            {
                Process.Kill();
                await Process.WaitForExitAsync();
            }

            foreach (var pid in EdgeProcessesOn(Model))
            {
                LocalCluster.Signal("KILL", pid);
            }

            Process.Dispose();
            _broker.Stop();
            _broker.Dispose();
            System.IO.Directory.Delete(Directory, recursive: true);
        }
    }

    /// <summary>A port whose next one is free as well, for two edges' metrics.</summary>
    private static int TwoFreePorts()
    {
        while (true)
        {
            using var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
            probe.Start();
            var port = ((System.Net.IPEndPoint)probe.LocalEndpoint).Port;
            probe.Stop();
            if (port < 65535 && LocalCluster.PortIsFree(port) && LocalCluster.PortIsFree(port + 1))
            {
                return port;
            }
        }
    }

    /// <summary>The live edge processes serving this model directory, whether or not a pid file names them.</summary>
    private static List<int> EdgeProcessesOn(string modelDirectory)
    {
        var pids = new List<int>();
        foreach (var directory in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(directory), out var pid))
            {
                continue;
            }

            try
            {
                var arguments = File.ReadAllText(Path.Combine(directory, "cmdline")).Split('\0');
                if (arguments.Contains("edge") && arguments.Contains(modelDirectory) && LocalCluster.IsAlive(pid))
                {
                    pids.Add(pid);
                }
            }
            catch (IOException)
            {
                // The process ended while it was read.
            }
        }

        return pids;
    }
}
