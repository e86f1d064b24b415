using System.CommandLine;
using System.Diagnostics;

namespace DanceMoE.EndToEndTests;

/// <summary>The CLI as a user meets it: help for every verb, and one-line usage errors with exit code 2.</summary>
public sealed class CommandLineTests
{
    [Fact]
    public async Task Every_verb_lists_every_one_of_its_options_in_its_help()
    {
        foreach (var (path, command) in Verbs())
        {
            var (exitCode, output, errors) = await RunAsync([.. path, "--help"]);

            Assert.True(exitCode == 0, $"{string.Join(' ', path)} --help exited {exitCode}: {errors}");
            foreach (var option in command.Options.Where(o => !o.Hidden))
            {
                Assert.True(output.Contains(option.Name, StringComparison.Ordinal), $"{string.Join(' ', path)} --help does not describe {option.Name}:\n{output}");
            }
        }
    }

    [Fact]
    public async Task An_unknown_option_is_a_one_line_usage_error_for_every_verb()
    {
        foreach (var (path, _) in Verbs())
        {
            var (exitCode, _, errors) = await RunAsync([.. path, "--no-such-option"]);

            Assert.True(exitCode == 2, $"{string.Join(' ', path)} --no-such-option exited {exitCode}: {errors}");
            var line = Assert.Single(errors.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.Contains("--no-such-option", line, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task A_bad_value_names_its_option_in_one_line()
    {
        var (exitCode, _, errors) = await RunAsync(["edge", "--id", "edge-x", "--model", "onnx/default", "--memory-mb", "abc"]);

        Assert.Equal(2, exitCode);
        var line = Assert.Single(errors.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("--memory-mb", line, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--speed", "1e308,1e-308", "--speed: '1e308' is not a number from 0.001 to 1000")]
    [InlineData("--memory-mb", "1e308,1", "--memory-mb: '1e308' is not a number from 0.001 to 1000000000")]
    [InlineData("--rtt-ms", "1e308", "--rtt-ms must be between 0 and 10000 (got '1e308')")]
    [InlineData("--bandwidth-mbps", "1e308", "--bandwidth-mbps must be between 0.001 and 1000000 (got '1e308')")]
    public async Task Placement_simulate_refuses_values_that_would_make_infinite_latencies(string option, string value, string error)
    {
        await AssertOneUsageLineAsync(["placement", "simulate", "--history", "/nonexistent", "--servers", "a,b", option, value], error);
    }

    [Fact]
    public async Task A_value_refused_while_the_verb_runs_names_the_whole_verb_like_a_parse_error()
    {
        var line = await OneErrorLineAsync(2, ["bench", "load", "--concurrency", "1,0"]);

        Assert.Equal("dancemoe bench load: --concurrency takes numbers from 1 to 10000 separated by commas (got '0') (see dancemoe bench load --help)", line);
    }

    [Fact]
    public async Task Bench_replay_refuses_a_budget_no_edge_could_be_given()
    {
        var line = await OneErrorLineAsync(2, ["bench", "replay", "--history", "/nonexistent", "--servers", "a,b", "--memory-mb", "1e308,20"]);

        Assert.Contains("--memory-mb: '1e308' is not a number from 0.001 to 1000000", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Generate_takes_a_checkpoint_as_the_edges_do_and_answers_as_its_export()
    {
        var root = Path.Combine(Path.GetTempPath(), $"dancemoe-generate-{Guid.NewGuid():N}");
        try
        {
            var state = new Dictionary<string, string> { ["DANCEMOE_STATE"] = Path.Combine(root, "state") };
            var checkpoint = Path.Combine(root, "tiny");
            var exported = Path.Combine(root, "onnx");
            Assert.Equal(0, (await RunAsync(["model", "tiny", "--out", checkpoint, "--layers", "2", "--experts", "4"])).ExitCode);
            Assert.Equal(0, (await RunAsync(["model", "export", checkpoint, "--out", exported])).ExitCode);

            string[] generate = ["generate", "--prompt", "edge servers", "--max-tokens", "6", "--provider", "cpu", "--json", "--model"];
            var fromCheckpoint = await RunAsync([.. generate, checkpoint], state, TimeSpan.FromMinutes(2));
            var fromExport = await RunAsync([.. generate, exported], state);

            Assert.True(fromCheckpoint.ExitCode == 0, fromCheckpoint.Errors);
            Assert.Contains($"exporting {checkpoint} to {Path.Combine(root, "state", "models")}", fromCheckpoint.Errors, StringComparison.Ordinal);
            Assert.True(fromExport.ExitCode == 0, fromExport.Errors);
            Assert.Equal(TokenIds(fromExport.Output), TokenIds(fromCheckpoint.Output));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }

        static int[] TokenIds(string json) =>
            System.Text.Json.JsonDocument.Parse(json).RootElement.GetProperty("token_ids").EnumerateArray().Select(t => t.GetInt32()).ToArray();
    }

    [Fact]
    public async Task Generate_refuses_more_intra_op_threads_than_cores_before_it_opens_a_session()
    {
        // Each of the model's sessions would start a pool this large: 1024 ran the machine out of threads.
        await AssertOneUsageLineAsync(["generate", "--prompt", "hi", "--threads", "1024"], $"--threads must be between 0 and {Environment.ProcessorCount} (got '1024')");
    }

    [Fact]
    public async Task Placement_bench_checks_top_k_against_the_experts_given_or_their_default()
    {
        var (exitCode, output, errors) = await RunAsync(
            ["placement", "bench", "--top-k", "8", "--servers", "4", "--layers", "1", "--memory", "0.5", "--requests", "1", "--tokens", "2", "--algorithms", "uniform", "--json"]);

        Assert.True(exitCode == 0, $"exit {exitCode}: {errors}");
        Assert.Contains("\"uniform\"", output, StringComparison.Ordinal);

        foreach (var (arguments, error) in new[]
        {
            (new[] { "--top-k", "300" }, "--top-k must be between 1 and 256 (got '300')"),
            (["--experts", "4", "--top-k", "5"], "--top-k must be between 1 and 4 (got '5')"),
        })
        {
            (exitCode, _, errors) = await RunAsync(["placement", "bench", .. arguments]);

            Assert.True(exitCode == 2, $"{string.Join(' ', arguments)}: exit {exitCode}: {errors}");
            var line = Assert.Single(errors.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.Contains(error, line, StringComparison.Ordinal);
        }
    }

    [Theory]
    [InlineData("--servers is empty", "placement", "simulate", "--history", "/nonexistent", "--servers", "")]
    [InlineData("--servers is empty", "placement", "simulate", "--history", "/nonexistent", "--servers", ",")]
    [InlineData("--servers has an empty item: 'intent,,law'", "placement", "simulate", "--history", "/nonexistent", "--servers", "intent,,law")]
    [InlineData("server '../deepseek-v2-lite/intent' is not a domain name", "placement", "simulate", "--history", "/nonexistent", "--servers", "../deepseek-v2-lite/intent")]
    [InlineData("server '..' is not a domain name", "placement", "simulate", "--history", "/nonexistent", "--servers", "law,..")]
    [InlineData("server 'law' is listed twice", "placement", "simulate", "--history", "/nonexistent", "--servers", "law,law")]
    [InlineData("--algorithms is empty", "placement", "simulate", "--history", "/nonexistent", "--servers", "law", "--algorithms", "")]
    [InlineData("--algorithms: algorithm uniform is listed twice", "placement", "simulate", "--history", "/nonexistent", "--servers", "law", "--algorithms", "uniform,Uniform")]
    [InlineData("--speed has an empty item: '1,,1'", "placement", "simulate", "--history", "/nonexistent", "--servers", "a,b", "--speed", "1,,1")]
    [InlineData("--plot is empty", "placement", "simulate", "--history", "/nonexistent", "--servers", "law", "--plot", "")]
    [InlineData("--out is empty", "model", "export", "/nonexistent", "--out", "")]
    [InlineData("CHECKPOINT is empty", "model", "export", "", "--out", "/nonexistent/onnx")]
    [InlineData("DIR is empty", "model", "verify", "", "--checkpoint", "/nonexistent")]
    [InlineData("take 5.37E+08 s a sample; at most 60 s", "bench", "link", "--mbps", "0.000001", "--bytes", "67108864")]
    [InlineData("take 1.64E+298 s a sample; at most 60 s", "bench", "link", "--mbps", "1e-300")]
    [InlineData("--top-k (2) exceeds --experts (1)", "model", "tiny", "--out", "/nonexistent/tiny", "--experts", "1")]
    [InlineData("--heads (4) is not a multiple of --kv-heads (8)", "model", "tiny", "--out", "/nonexistent/tiny", "--kv-heads", "8")]
    [InlineData("--hidden (8) / --heads (8) makes heads 1 wide; their RoPE part (1) must be even and at least 2", "model", "tiny", "--out", "/nonexistent/tiny", "--hidden", "8", "--heads", "8")]
    [InlineData("--top-k must be between 1 and 4096 (got '0')", "placement", "bench", "--top-k", "0")]
    [InlineData("--max-tokens must be between 1 and 512 (got '99999999999999999999')", "bench", "cluster", "--max-tokens", "99999999999999999999")]
    [InlineData("the instance would have 268,435,456 servers x layers x experts; at most 100,000,000 fit in memory",
        "placement", "bench", "--servers", "64", "--layers", "1024", "--experts", "4096", "--top-k", "1", "--requests", "1", "--tokens", "2", "--algorithms", "uniform")]
    [InlineData("--algorithms: unknown algorithm 'foo'", "placement", "bench", "--layers", "2", "--experts", "4", "--top-k", "2", "--algorithms", "foo")]
    [InlineData("--algorithms: algorithm uniform is listed twice", "placement", "bench", "--layers", "2", "--experts", "4", "--top-k", "2", "--algorithms", "uniform,uniform")]
    [InlineData("infeasible: the servers hold 0 experts together but the model has 8: every expert needs a home",
        "placement", "bench", "--layers", "2", "--experts", "4", "--top-k", "2", "--memory", "0.0001", "--algorithms", "uniform")]
    [InlineData("infeasible: the servers hold 0 experts together but the model has 1664: every expert needs a home",
        "placement", "simulate", "--history", "/nonexistent", "--servers", "a,b", "--memory", "0.0001")]
    [InlineData("--plot /tmp is a directory, not a file", "placement", "simulate", "--history", "/nonexistent", "--servers", "a,b", "--plot", "/tmp")]
    [InlineData("--plot /nonexistent/plot.png: no folder /nonexistent to write it in", "bench", "replay", "--history", "/nonexistent", "--servers", "a,b", "--plot", "/nonexistent/plot.png")]
    [InlineData("--repeats must be a whole number from 1 to 20 (got '1.5')", "bench", "replay", "--history", "/nonexistent", "--servers", "a,b", "--repeats", "1.5")]
    [InlineData("--requests-per-server must be a whole number from 1 to 1000 (got '2.9')", "bench", "replay", "--history", "/nonexistent", "--servers", "a,b", "--requests-per-server", "2.9")]
    [InlineData("--algorithms: algorithm eplb is listed twice", "bench", "replay", "--history", "/nonexistent", "--servers", "a,b", "--algorithms", "eplb,eplb")]
    [InlineData("--algorithms: algorithm eplb is listed twice", "bench", "replay", "--history", "/nonexistent", "--servers", "a,b", "--algorithms", "eplb,EPLB")]
    [InlineData("--queue: edge id 'a b' is not an edge id", "bench", "echo", "--queue", "a b")]
    public async Task Offline_verbs_refuse_what_they_cannot_run_in_one_usage_line(string error, params string[] arguments)
    {
        await AssertOneUsageLineAsync(arguments, error);
    }

    [Fact]
    public async Task Bench_expert_exec_refuses_a_step_too_large_for_memory_before_it_allocates()
    {
        var root = Path.Combine(Path.GetTempPath(), $"dancemoe-expert-exec-{Guid.NewGuid():N}");
        try
        {
            Assert.Equal(0, (await RunAsync(["model", "tiny", "--out", Path.Combine(root, "tiny"), "--layers", "2", "--experts", "4"])).ExitCode);
            Assert.Equal(0, (await RunAsync(["model", "export", Path.Combine(root, "tiny"), "--out", Path.Combine(root, "onnx")])).ExitCode);

            foreach (var prefill in new[] { "4096", "1" })
            {
                var (exitCode, _, errors) = await RunAsync(["bench", "expert-exec", "--model", Path.Combine(root, "onnx"), "--sequences", "4096", "--prefill-tokens", prefill]);

                Assert.True(exitCode == 2, $"exit {exitCode}: {errors}");
                var line = Assert.Single(errors.Split('\n', StringSplitOptions.RemoveEmptyEntries));
                Assert.Contains($"--sequences 4096 with --prefill-tokens {prefill} would take about ", line, StringComparison.Ordinal);
                Assert.Contains(" MiB on this model; at most 8,192 MiB", line, StringComparison.Ordinal);
            }
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public async Task Model_tiny_and_export_refuse_an_out_that_is_or_lies_in_a_file_before_any_work()
    {
        var file = Path.GetTempFileName();
        try
        {
            // The export's checkpoint does not exist: the --out line shows the check comes before the checkpoint is opened.
            foreach (var verb in new[] { new[] { "model", "tiny" }, ["model", "export", "/nonexistent"] })
            {
                await AssertOneUsageLineAsync([.. verb, "--out", file], $"--out {file} is a file, not a directory: remove it or choose another path");
                await AssertOneUsageLineAsync([.. verb, "--out", Path.Combine(file, "model")], $"--out {Path.Combine(file, "model")}: {file} is a file, not a folder");
            }
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Theory]
    [InlineData("placement", "simulate")]
    [InlineData("bench", "replay")]
    public async Task A_trace_file_that_is_no_trace_is_one_line_naming_it_and_exit_code_2(string verb, string subverb)
    {
        var history = Directory.CreateTempSubdirectory("dancemoe-traces-").FullName;
        try
        {
            var path = Path.Combine(history, "law.layer01.txt");
            string[] arguments = [verb, subverb, "--history", history, "--servers", "law,intent", "--memory", "1"];

            File.WriteAllText(path, "1\t2\n");
            Assert.Equal($"dancemoe {verb}: error: {path}: line 1: 2 ids is not a positive multiple of top-6", await OneErrorLineAsync(2, arguments));

            // DeepSeek-V2-Lite's top-6 in UTF-16: decoded as its byte order mark says, it read as a good trace.
            File.WriteAllText(path, "1\t2\t3\t4\t5\t6\n", System.Text.Encoding.Unicode);
            Assert.Equal(
                $"dancemoe {verb}: error: {path}: starts with a UTF-16 little-endian byte order mark: trace files are UTF-8 text", await OneErrorLineAsync(2, arguments));
        }
        finally
        {
            Directory.Delete(history, recursive: true);
        }
    }

    [Fact]
    public async Task No_verb_prints_the_usage_and_exits_2()
    {
        var (exitCode, output, _) = await RunAsync([]);

        Assert.Equal(2, exitCode);
        Assert.Contains("edge", output, StringComparison.Ordinal);
    }

    /// <summary>Every command that runs something (no sub-verbs), with its path from the root.</summary>
    private static List<(string[] Path, Command Command)> Verbs()
    {
        var verbs = new List<(string[], Command)>();
        void Visit(Command command, string[] path)
        {
            if (command.Subcommands.Count == 0)
            {
                verbs.Add((path, command));
            }

            foreach (var sub in command.Subcommands)
            {
                Visit(sub, [.. path, sub.Name]);
            }
        }

        foreach (var verb in Cli.CommandLine.Build().Subcommands)
        {
            Visit(verb, [verb.Name]);
        }

        Assert.True(verbs.Count >= 15, $"only {verbs.Count} verbs found");
        return verbs;
    }

    private static async Task AssertOneUsageLineAsync(string[] arguments, string error) =>
        Assert.Contains(error, await OneErrorLineAsync(2, arguments), StringComparison.Ordinal);

    /// <summary>Runs the CLI as <see cref="RunAsync"/> does and checks it exited with <paramref name="exitCode"/>, wrote nothing on standard output and one line on standard error; returns that line.</summary>
    internal static async Task<string> OneErrorLineAsync(int exitCode, string[] arguments, IReadOnlyDictionary<string, string>? environment = null)
    {
        var (exited, output, errors) = await RunAsync(arguments, environment);

        Assert.True(exited == exitCode, $"{string.Join(' ', arguments)}: exit {exited}: {errors}");
        Assert.Empty(output);
        return Assert.Single(errors.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    /// <summary>Runs <c>dotnet dancemoe.dll</c> with <paramref name="arguments"/>, and <paramref name="environment"/> on top of this process's; a minute at most unless <paramref name="timeout"/> says.</summary>
    internal static async Task<(int ExitCode, string Output, string Errors)> RunAsync(
        string[] arguments, IReadOnlyDictionary<string, string>? environment = null, TimeSpan? timeout = null)
    {
        var start = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[name] = value;
        }

        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "dancemoe.dll"));
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start)!;
        process.StandardInput.Close();
        var output = process.StandardOutput.ReadToEndAsync();
        var errors = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(timeout ?? TimeSpan.FromSeconds(60));
        return (process.ExitCode, await output, await errors);
    }
}
