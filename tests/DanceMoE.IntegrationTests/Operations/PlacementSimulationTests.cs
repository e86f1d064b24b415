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
        var spec = new SimulationSpec(["law"], 1, null, null, LinkSpec.FromMbps(500, 2), new LatencyOptions());

        var error = Assert.Throws<OperationException>(() => PlacementSimulation.FromTraces("/nonexistent/traces", null, spec));

        Assert.Equal("--history: no trace directory /nonexistent/traces", error.Message);
        Assert.Equal(OperationFailure.InvalidSettings, error.Failure);
    }

    [Fact]
    public void A_synthetic_instance_too_large_to_hold_is_refused_before_it_is_generated()
    {
        var error = Assert.Throws<OperationException>(() => PlacementSimulation.Synthetic(8, layers: 1024, experts: 4096, topK: 8, memory: 0.3, requests: 1000, tokens: 100_000));

        Assert.Equal("the instance would route 13,107,200,000,000 expert choices (servers x 2 x requests x tokens x layers x top-k); at most 200,000,000 are generated", error.Message);
        Assert.Equal(OperationFailure.InvalidSettings, error.Failure);
    }

    [Fact]
    public void A_synthetic_instance_stops_generating_when_cancelled()
    {
        // 8 x 2 x 100 x 195 x 64 x 8 choices, under the limit: most of a minute to generate on a 2-core machine.
        using var cancellation = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));

        Assert.ThrowsAny<OperationCanceledException>(() => PlacementSimulation.Synthetic(
            8, layers: 64, experts: 256, topK: 8, memory: 0.3, requests: 100, tokens: 195, cancellation.Token));
    }

    [Fact]
    public void A_server_listed_twice_is_refused()

    {
        using var traces = new TraceFolder(["law"], sequences: 4);
        var spec = new SimulationSpec(["law", "law"], 0.6, null, null, LinkSpec.FromMbps(500, 2), new LatencyOptions());

        var error = Assert.Throws<OperationException>(() => PlacementSimulation.FromTraces(traces.Path, null, spec));

        Assert.Equal("server 'law' is listed twice: one server per workload domain", error.Message);
    }

    [Theory]
    [InlineData("../traces/law")]
    [InlineData("law/..")]
    [InlineData("..")]
    [InlineData("")]
    public void A_server_name_that_is_not_a_plain_domain_name_is_refused(string name)
    {
        using var traces = new TraceFolder(["law"], sequences: 4);
        var spec = new SimulationSpec(["law", name], 0.6, null, null, LinkSpec.FromMbps(500, 2), new LatencyOptions());

        var error = Assert.Throws<OperationException>(() => PlacementSimulation.FromTraces(traces.Path, null, spec));

        Assert.StartsWith($"server '{name}' is not a domain name", error.Message, StringComparison.Ordinal);
        Assert.Equal(OperationFailure.InvalidSettings, error.Failure);
    }

    [Theory]
    [InlineData("/nonexistent/trace.txt")]
    [InlineData("intent.layer05.txt")]
    public void A_trace_file_that_is_a_dangling_or_looping_link_fails_as_one_line_naming_it(string target)
    {
        using var traces = new TraceFolder(["intent"], sequences: 4);
        var path = System.IO.Path.Combine(traces.Path, "intent.layer05.txt");
        File.Delete(path);
        File.CreateSymbolicLink(path, target);
        var spec = new SimulationSpec(["intent"], 1, null, null, LinkSpec.FromMbps(500, 2), new LatencyOptions());

        var error = Assert.Throws<OperationException>(() => PlacementSimulation.FromTraces(traces.Path, null, spec));

        Assert.Contains(path, error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', error.Message);
    }

    [Fact]
    public async Task A_trace_file_that_is_a_fifo_fails_as_one_line_instead_of_waiting_for_a_writer()
    {
        using var traces = new TraceFolder(["intent"], sequences: 4);
        var path = System.IO.Path.Combine(traces.Path, "intent.layer05.txt");
        File.Delete(path);
        using (var mkfifo = System.Diagnostics.Process.Start("/usr/bin/mkfifo", [path]))
        {
            await mkfifo.WaitForExitAsync();
            Assert.Equal(0, mkfifo.ExitCode);
        }

        var spec = new SimulationSpec(["intent"], 1, null, null, LinkSpec.FromMbps(500, 2), new LatencyOptions());

        var load = Task.Run(() => PlacementSimulation.FromTraces(traces.Path, null, spec));
        var finished = await Task.WhenAny(load, Task.Delay(TimeSpan.FromSeconds(10))) == load;
        if (!finished)
        {
            // Lets the blocked open go on, so that the test fails rather than leaves a thread waiting.
            await using (new FileStream(path, FileMode.Open, FileAccess.Write))
            {
            }
        }

        Assert.True(finished, "reading a FIFO for a trace file waited for a writer");
        var error = await Assert.ThrowsAsync<OperationException>(() => load);
        Assert.Equal($"--history: {path} is not a regular file", error.Message);
        Assert.Equal(OperationFailure.InvalidSettings, error.Failure);
    }

    [Fact]
    public void A_missing_trace_file_of_the_eval_traces_names_eval_as_invalid_input()
    {
        using var history = new TraceFolder(["intent"], sequences: 4);
        using var eval = new TraceFolder(["intent"], sequences: 4);
        var path = System.IO.Path.Combine(eval.Path, "intent.layer07.txt");
        File.Delete(path);
        var spec = new SimulationSpec(["intent"], 1, null, null, LinkSpec.FromMbps(500, 2), new LatencyOptions());

        var error = Assert.Throws<OperationException>(() => PlacementSimulation.FromTraces(history.Path, eval.Path, spec));

        Assert.Equal($"--eval: missing trace file {path}", error.Message);
        Assert.Equal(OperationFailure.InvalidSettings, error.Failure);
    }

    [Fact]
    public void A_trace_file_that_is_a_directory_is_named_as_one_not_as_missing()
    {
        using var traces = new TraceFolder(["intent"], sequences: 4);
        var path = System.IO.Path.Combine(traces.Path, "intent.layer05.txt");
        File.Delete(path);
        Directory.CreateDirectory(path);
        var spec = new SimulationSpec(["intent"], 1, null, null, LinkSpec.FromMbps(500, 2), new LatencyOptions());

        var error = Assert.Throws<OperationException>(() => PlacementSimulation.FromTraces(traces.Path, null, spec));

        Assert.Equal($"--history: {path} is a directory, not a file", error.Message);
        Assert.Equal(OperationFailure.InvalidSettings, error.Failure);
    }

    [Fact]
    public void Layer_files_that_disagree_on_their_sequences_are_named_with_their_directory()
    {
        using var traces = new TraceFolder(["intent"], sequences: 4);
        File.WriteAllText(System.IO.Path.Combine(traces.Path, "intent.layer03.txt"), "");
        var spec = new SimulationSpec(["intent"], 1, null, null, LinkSpec.FromMbps(500, 2), new LatencyOptions());

        var error = Assert.Throws<OperationException>(() => PlacementSimulation.FromTraces(traces.Path, null, spec));

        Assert.Equal($"{traces.Path}/intent.layer*.txt: layer 3 has 0 sequences, layer 1 has 4", error.Message);
        Assert.Equal(OperationFailure.InvalidSettings, error.Failure);
    }

    [Fact]
    public void A_malformed_trace_line_is_named_with_its_file_as_invalid_input()
    {
        using var traces = new TraceFolder(["intent"], sequences: 4);
        var path = System.IO.Path.Combine(traces.Path, "intent.layer02.txt");
        File.WriteAllText(path, "1\t2\n");
        var spec = new SimulationSpec(["intent"], 1, null, null, LinkSpec.FromMbps(500, 2), new LatencyOptions());

        var error = Assert.Throws<OperationException>(() => PlacementSimulation.FromTraces(traces.Path, null, spec));

        Assert.Equal($"{path}: line 1: 2 ids is not a positive multiple of top-6", error.Message);
        Assert.Equal(OperationFailure.InvalidSettings, error.Failure);
    }

    [Fact]
    public void A_server_whose_traces_are_empty_is_refused_though_the_others_have_sequences()
    {
        using var traces = new TraceFolder(["intent", "law"], sequences: 4);
        using var full = new TraceFolder(["intent", "law"], sequences: 4);
        foreach (var file in Directory.GetFiles(traces.Path, "law.*"))
        {
            File.WriteAllText(file, "");
        }

        var spec = new SimulationSpec(["intent", "law"], 0.6, null, null, LinkSpec.FromMbps(500, 2), new LatencyOptions());

        var split = Assert.Throws<OperationException>(() => PlacementSimulation.FromTraces(traces.Path, null, spec));
        var separate = Assert.Throws<OperationException>(() => PlacementSimulation.FromTraces(traces.Path, full.Path, spec));

        Assert.Equal(
            $"{traces.Path}: server 'law' has 0 sequence(s): split into its first half (to place from) and second half (to judge on) they leave no history; give more sequences, or --eval DIR",
            split.Message);
        Assert.Equal($"{traces.Path}: the traces of server 'law' hold no sequence", separate.Message);
        Assert.All([split, separate], e => Assert.Equal(OperationFailure.InvalidSettings, e.Failure));
    }

    [Fact]
    public void A_synthetic_instance_with_too_many_expert_slots_to_hold_is_refused()
    {
        var error = Assert.Throws<OperationException>(() => PlacementSimulation.Synthetic(64, layers: 1024, experts: 4096, topK: 1, memory: 0.3, requests: 1, tokens: 2));

        Assert.Equal("the instance would have 268,435,456 servers x layers x experts; at most 100,000,000 fit in memory", error.Message);
        Assert.Equal(OperationFailure.InvalidSettings, error.Failure);
    }

    [Theory]
    [InlineData(0, "0 sequence(s) split into each server's first half (to place from) and second half (to judge on) leave no history")]
    [InlineData(1, "1 sequence(s) split into each server's first half (to place from) and second half (to judge on) leave no history")]
    public void Traces_too_short_to_place_from_and_judge_on_are_refused(int sequences, string error)
    {
        using var traces = new TraceFolder(["law"], sequences);
        var spec = new SimulationSpec(["law"], 1, null, null, LinkSpec.FromMbps(500, 2), new LatencyOptions());

        var thrown = Assert.Throws<OperationException>(() => PlacementSimulation.FromTraces(traces.Path, null, spec));

        Assert.Equal($"{traces.Path}: {error}; give more sequences, or --eval DIR", thrown.Message);
    }

    [Fact]
    public void Two_sequences_of_a_server_place_from_one_and_judge_on_the_other()
    {
        using var traces = new TraceFolder(["law"], sequences: 2);
        var spec = new SimulationSpec(["law"], 1, null, null, LinkSpec.FromMbps(500, 2), new LatencyOptions());

        var simulation = PlacementSimulation.FromTraces(traces.Path, null, spec);

        Assert.StartsWith("history 1 requests / ", simulation.Description, StringComparison.Ordinal);
        Assert.Contains("eval 1 requests / ", simulation.Description, StringComparison.Ordinal);
    }

    /// <summary>DeepSeek-V2-Lite's shape (26 layers, top-6 of 64): each sequence two tokens routed to experts 0-5 and 6-11.</summary>
    private sealed class TraceFolder : IDisposable
    {
        public TraceFolder(IEnumerable<string> servers, int sequences)
        {
            Directory.CreateDirectory(Path);
            foreach (var server in servers)
            {
                for (var layer = 1; layer <= 26; layer++)
                {
                    var line = string.Join('\t', Enumerable.Range(0, 12)) + "\n";
                    File.WriteAllText(System.IO.Path.Combine(Path, $"{server}.layer{layer:D2}.txt"), string.Concat(Enumerable.Repeat(line, sequences)));
                }
            }
        }

        public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"dancemoe-traces-{Guid.NewGuid():N}");

        public void Dispose() => Directory.Delete(Path, recursive: true);
    }
}
