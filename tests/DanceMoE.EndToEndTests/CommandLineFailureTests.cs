using System.ComponentModel.DataAnnotations;
using System.Diagnostics;
using System.Globalization;
using DanceMoE.Edge;
using DanceMoE.Hosting;
using DanceMoE.Model;
using DanceMoE.Model.Onnx;
using DanceMoE.Operations;

namespace DanceMoE.EndToEndTests;

/// <summary>The CLI never aborts: a service that is down and an odd edge id are each one line and an exit code, no stack trace.</summary>
public sealed class CommandLineFailureTests
{
    /// <summary>A port nothing listens on: the connection is refused at once.</summary>
    private const string ClosedPostgres = "postgresql://dancemoe:dancemoe@127.0.0.1:1/dancemoe";

    private const string ClosedRabbitMq = "amqp://dancemoe:dancemoe@127.0.0.1:1/dancemoe";

    public static TheoryData<string> OddEdgeIds => new()
    {
        new string('a', 300),
        "edge-1-control",
        "edge-1-experts",
        "1-control",
        "coordinator",
        "coordinator-migrations",
        "Edge-1",
        "edge_1",
        "edge 1",
        "edge/1",
        "edge-1\nsecond line",
        "-edge",
        "édge-1",
    };

    [Theory]
    [InlineData("generate")]
    [InlineData("infer")]
    public async Task An_empty_prompt_is_refused_by_the_oracle_as_by_an_edge_in_one_line_and_exit_2(string verb)
    {
        string[] arguments = verb == "generate" ? [verb, "--model", "/nonexistent", "--prompt", ""] : [verb, "--edge", "edge-1", "--prompt", ""];

        var line = await CommandLineTests.OneErrorLineAsync(2, arguments, new Dictionary<string, string>());
        Assert.Contains("--prompt is empty", line, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("status")]
    [InlineData("status", "--json")]
    public async Task Status_with_PostgreSQL_down_is_one_line_and_exit_3(params string[] arguments)
    {
        var line = await CommandLineTests.OneErrorLineAsync(3, arguments, new Dictionary<string, string> { ["ConnectionStrings__postgres"] = ClosedPostgres });
        Assert.StartsWith("dancemoe status: error: cannot read the cluster state at postgresql://dancemoe:***@127.0.0.1:1/", line, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("status")]
    [InlineData("status", "--json")]
    public async Task Status_with_RabbitMQ_down_is_one_line_and_exit_3(params string[] arguments)
    {
        var line = await CommandLineTests.OneErrorLineAsync(3, arguments, new Dictionary<string, string> { ["ConnectionStrings__rabbitmq"] = ClosedRabbitMq });
        Assert.StartsWith("dancemoe status: error: cannot connect to RabbitMQ at amqp://dancemoe:***@127.0.0.1:1/", line, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("postgres", "garbage=;secret;", "status", "ConnectionStrings__postgres: not a postgresql://user:password@host:port/db URI nor an Npgsql Key=Value; connection string")]
    [InlineData("postgres", "postgresql://a:secret@/db", "db migrate", "ConnectionStrings__postgres: not a valid postgresql://user:password@host:port/db URI")]
    [InlineData("rabbitmq", "amqp://a:secret@[::1", "status", "ConnectionStrings__rabbitmq: 'amqp://a:***@[::1' is not an amqp://user:password@host:port/vhost URI")]
    [InlineData("rabbitmq", "http://a:secret@localhost", "infer --edge edge-1 --prompt hi", "ConnectionStrings__rabbitmq: 'http://a:***@localhost' is not an amqp://user:password@host:port/vhost URI")]
    [InlineData("rabbitmq_ops", "amqp//u:secret@localhost/v", "placement run-now", "ConnectionStrings__rabbitmq_ops: 'amqp//u:***@localhost/v' is not an amqp://")]
    [InlineData("postgres", "garbage=;secret;", "coordinator --layers 2 --experts 4 --top-k 1 --expert-bytes 100", "ConnectionStrings__postgres: not a postgresql://")]
    public async Task A_malformed_connection_string_is_one_line_naming_the_variable_and_never_the_password(string name, string value, string command, string error)
    {
        var line = await CommandLineTests.OneErrorLineAsync(2, command.Split(' '), new Dictionary<string, string> { ["ConnectionStrings__" + name] = value });
        Assert.Contains(error, line, StringComparison.Ordinal);
        Assert.DoesNotContain("secret", line, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("rabbitmq", "status", "cannot connect to RabbitMQ at amqp://dancemoe-ops:***@", "the broker refused the login (ACCESS_REFUSED")]
    [InlineData("rabbitmq", "infer --edge edge-1 --prompt hi", "cannot connect to RabbitMQ at amqp://dancemoe-client:***@", "the broker refused the login (ACCESS_REFUSED")]
    [InlineData("postgres", "status", "cannot read the cluster state at postgresql://dancemoe:***@", "the database server refused the login (28P01")]
    [InlineData("postgres", "db migrate", "cannot migrate the database at postgresql://dancemoe:***@", "the database server refused the login (28P01")]
    [InlineData("postgres-database", "db migrate", "cannot migrate the database at postgresql://dancemoe:***@", "the database server has no such database (3D000")]
    [InlineData("postgres_admin", "db analyst --name reader", "cannot create the analyst login reader: ", "the database server refused the login (28P01")]
    public async Task A_service_that_refuses_the_login_or_database_is_a_setting_to_fix_not_a_service_down(string refused, string command, string prefix, string refusal)
    {
        var environment = new Dictionary<string, string> { ["DANCEMOE_ANALYST_PASSWORD"] = "analyst-secret" };
        if (refused == "rabbitmq")
        {
            var role = command.StartsWith("infer", StringComparison.Ordinal) ? BusRole.Client : BusRole.Ops;
            environment["ConnectionStrings__rabbitmq"] = WithWrongPassword(LocalEnvironment.RabbitMqUriFor(role));
        }
        else
        {
            var url = new UriBuilder(LocalEnvironment.PostgresUrl);
            (url.Password, url.Path) = refused == "postgres-database" ? (url.Password, "/no_such_database") : ("wrong", url.Path);
            environment[refused == "postgres_admin" ? "ConnectionStrings__postgres_admin" : "ConnectionStrings__postgres"] = url.Uri.ToString();
        }

        var line = await CommandLineTests.OneErrorLineAsync(2, command.Split(' '), environment);

        Assert.Contains(prefix, line, StringComparison.Ordinal);
        Assert.Contains(refusal, line, StringComparison.Ordinal);
        Assert.EndsWith($"in ConnectionStrings__{(refused is "rabbitmq" or "postgres_admin" ? refused : "postgres")}", line, StringComparison.Ordinal);
        Assert.DoesNotContain("is it up", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_empty_postgres_connection_string_is_unset_as_an_empty_rabbitmq_one_is()
    {
        var line = await CommandLineTests.OneErrorLineAsync(3, ["status"],
            new Dictionary<string, string> { ["ConnectionStrings__postgres"] = "", ["DANCEMOE_POSTGRES_PORT"] = "1" });
        Assert.StartsWith("dancemoe status: error: cannot read the cluster state at postgresql://dancemoe:***@127.0.0.1:1/", line, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("DANCEMOE_POSTGRES_PORT", "abc", "db migrate")]
    [InlineData("DANCEMOE_POSTGRES_PORT", "70000", "status")]
    [InlineData("DANCEMOE_POSTGRES_PORT", "5442/other?Host=elsewhere", "db migrate")]
    [InlineData("DANCEMOE_AMQP_PORT", "5682x", "status")]
    [InlineData("DANCEMOE_AMQP_PORT", "-1", "infer --edge edge-1 --prompt hi")]
    public async Task A_local_port_variable_that_is_no_port_is_one_line_naming_it_and_exit_2(string variable, string value, string command)
    {
        // Connection strings would take precedence over the local services' ports: none here.
        var environment = new Dictionary<string, string>
        {
            [variable] = value,
            ["ConnectionStrings__postgres"] = "",
            ["ConnectionStrings__rabbitmq"] = "",
            ["ConnectionStrings__rabbitmq_ops"] = "",
            ["ConnectionStrings__rabbitmq_client"] = "",
        };

        var line = await CommandLineTests.OneErrorLineAsync(2, command.Split(' '), environment);
        Assert.EndsWith($"error: {variable} '{value}' is not a port (a whole number from 1 to 65535)", line, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("status", "DANCEMOE_AMQP_PORT", "a[$(echo injected >&2)]", "DANCEMOE_AMQP_PORT 'a[$(echo injected >&2)]' is not a port from 1 to 45527")]
    [InlineData("status", "DANCEMOE_AMQP_PORT", "50000", "DANCEMOE_AMQP_PORT '50000' is not a port from 1 to 45527")]
    [InlineData("status", "DANCEMOE_POSTGRES_PORT", "5442x", "DANCEMOE_POSTGRES_PORT '5442x' is not a port from 1 to 65535")]
    [InlineData("status", "DANCEMOE_EPMD_PORT", "70000", "DANCEMOE_EPMD_PORT '70000' is not a port from 1 to 65535")]
    [InlineData("status", "DANCEMOE_STATE", "/nonexistent/dancemoe state", "DANCEMOE_STATE '/nonexistent/dancemoe state' holds a blank or a control character")]
    public async Task Services_refuse_a_port_or_state_variable_they_cannot_use_in_one_line_before_touching_anything(string verb, string variable, string value, string error)
    {
        // status only: the check comes before any verb, and an up or down that got past it would act on real services.
        var start = new System.Diagnostics.ProcessStartInfo(Path.Combine(DemoBudgetLocalityTests.RepositoryRoot(), "scripts", "services.sh"), [verb])
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.Environment[variable] = value;
        using var services = System.Diagnostics.Process.Start(start)!;
        var output = services.StandardOutput.ReadToEndAsync();
        var errors = services.StandardError.ReadToEndAsync();
        await services.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(20));

        Assert.Equal(1, services.ExitCode);
        Assert.Empty(await output);
        Assert.StartsWith($"services: error: {error}", Assert.Single((await errors).Split('\n', StringSplitOptions.RemoveEmptyEntries)), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("", "usage: scripts/bench-load-cores.sh CPUS [bench load options]", 2)]
    [InlineData("--edges 3", "usage: scripts/bench-load-cores.sh CPUS [bench load options]", 2)]
    [InlineData("4096 --edges 3", "bench-load-cores: '4096' names no CPU of this machine (it has ", 2)]
    [InlineData("0;true --edges 3", "bench-load-cores: '0;true' names no CPU of this machine (it has ", 2)]
    [InlineData("0 --edges 3", "bench-load-cores: no local services running under ", 1)]
    public async Task Bench_load_on_chosen_cores_refuses_what_it_cannot_pin_in_one_line_before_any_benchmark(string arguments, string error, int exitCode)
    {
        // A state folder with no services in it: a run that got past its checks would pin nothing and start no benchmark.
        var state = Directory.CreateTempSubdirectory("dancemoe-cores-");
        try
        {
            var start = new ProcessStartInfo(Path.Combine(DemoBudgetLocalityTests.RepositoryRoot(), "scripts", "bench-load-cores.sh"), arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            {
                UseShellExecute = false,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            start.Environment["DANCEMOE_STATE"] = state.FullName;
            using var script = Process.Start(start)!;
            var output = script.StandardOutput.ReadToEndAsync();
            var errors = script.StandardError.ReadToEndAsync();
            await script.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(20));

            Assert.Equal(exitCode, script.ExitCode);
            Assert.Empty(await output);
            Assert.StartsWith(error, Assert.Single((await errors).Split('\n', StringSplitOptions.RemoveEmptyEntries)), StringComparison.Ordinal);
        }
        finally
        {
            state.Delete(recursive: true);
        }
    }

    [Theory]
    [InlineData("--cron=not-a-cron", "", "", "PlacementJob:Cron 'not-a-cron' is not a Quartz cron expression")]
    [InlineData("--algorithm=nope", "", "", "PlacementJob:Algorithm 'nope' is not one of uniform, ")]
    [InlineData("--drain-ms=5", "PlacementJob__SampleRequests", "0", "PlacementJob:SampleRequests: The field SampleRequests must be between 1 and 100000.")]
    [InlineData("--cron=not-a-cron", "Migration__Retries", "-1", "PlacementJob:Cron 'not-a-cron' is not a Quartz cron expression; Migration:Retries: The field Retries must be between 0 and 10.")]
    [InlineData("--drain-ms=5", "PlacementJob__WindowMinutes", "NaN", "PlacementJob:WindowMinutes: The field WindowMinutes must be between 1 and 10080.")]
    [InlineData("--drain-ms=5", "PlacementJob__RttMs", "Infinity", "PlacementJob:RttMs: The field RttMs must be between 0 and 10000.")]
    [InlineData("--cron=0 0/5 * * * ?", "Migration__DrainMilliseconds", "1e300", "Migration:DrainMilliseconds: The field DrainMilliseconds must be between 0 and 600000.")]
    public async Task An_invalid_coordinator_option_is_one_line_naming_its_key_before_any_bus_and_exit_2(string flag, string variable, string value, string error)
    {
        var environment = variable.Length == 0 ? new Dictionary<string, string>() : new Dictionary<string, string> { [variable] = value };

        var line = await CommandLineTests.OneErrorLineAsync(2,
            ["coordinator", "--layers", "2", "--experts", "4", "--top-k", "1", "--expert-bytes", "100", flag], environment);
        Assert.Contains(error, line, StringComparison.Ordinal);
        Assert.DoesNotContain("DataAnnotation", line, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("PlacementJob__Experts", "40000", "PlacementJob:Experts: The field Experts must be between 1 and 32768.")]
    [InlineData("PlacementJob__Layers", "4096", "PlacementJob:Layers x Experts (4096 x 1024) is more than 262144 expert slots")]
    public async Task A_model_shape_the_job_could_not_store_or_hold_in_memory_is_refused_at_start(string variable, string value, string error)
    {
        // Without --layers and --experts the coordinator takes the shape from PlacementJob__* (as the coordinator host does).
        var environment = new Dictionary<string, string> { ["PlacementJob__Layers"] = "2", ["PlacementJob__Experts"] = "1024", [variable] = value };

        var line = await CommandLineTests.OneErrorLineAsync(2, ["coordinator", "--top-k", "1", "--expert-bytes", "100"], environment);
        Assert.Contains(error, line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_coordinator_given_no_model_or_shape_says_what_to_give_in_one_usage_line()
    {
        var line = await CommandLineTests.OneErrorLineAsync(2, ["coordinator", "--algorithm", "eplb"]);

        Assert.Equal("dancemoe coordinator: no model to plan for: give --model DIR (Model__Directory), or --layers, --experts, --top-k and --expert-bytes (see dancemoe coordinator --help)", line);
    }

    [Theory]
    [InlineData("Edge__Link__DelayMs", "-1", "dancemoe edge: error: Edge:Link:DelayMs: The field DelayMs must be between 0 and 10000.")]
    [InlineData("Edge__Link__Mbps", "fast", "dancemoe edge: error: Failed to convert configuration value 'fast' at 'Edge:Link:Mbps' to type 'System.Double'.")]
    [InlineData("Edge__Link__DelayMs", "NaN", "dancemoe edge: error: Edge:Link:DelayMs: The field DelayMs must be between 0 and 10000.")]
    [InlineData("Edge__Link__Mbps", "-0.4", "dancemoe edge: error: Edge:Link:Mbps: The field Mbps must be between 0 and 1000000.")]
    [InlineData("Edge__LoadMsPerMb", "1e300", "dancemoe edge: error: Edge:LoadMsPerMb: The field LoadMsPerMb must be between 0 and 1000000.")]
    [InlineData("Edge__MaxWaiting", "100000", "dancemoe edge: error: Edge:MaxWaiting: The field MaxWaiting must be between 0 and 64000.")]
    public async Task An_invalid_edge_option_is_one_line_naming_its_key_before_the_model_loads_and_exit_2(string variable, string value, string error)
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 59);
        var environment = cluster.CliEnvironment();
        environment[variable] = value;

        var line = await CommandLineTests.OneErrorLineAsync(2,
            ["edge", "--id", "edge-1", "--model", cluster.ModelDirectory, "--uniform-over", "edge-1", "--no-traces"], environment);
        Assert.Equal(error, line);
    }

    [Fact]
    public void The_edge_hosts_flags_mistyped_are_refused_and_its_switches_take_no_value()
    {
        var refused = Assert.Throws<HostFlagException>(() => EdgeCommandLine.Build(["--id", "edge-1", "--memroy-mb", "512"]));
        Assert.StartsWith("unknown flag '--memroy-mb' (flags: --compute-class, --deadline-ms, --expert-concurrency, --expert-metrics, --heartbeat-seconds, ", refused.Message, StringComparison.Ordinal);

        var configuration = EdgeCommandLine.Build(["--no-traces", "--id", "edge-1", "--expert-metrics", "--memory-mb=512"]);
        Assert.Equal("edge-1", configuration["Edge:Id"]);
        Assert.Equal("512", configuration["Edge:MemoryMb"]);
        Assert.Equal("false", configuration["Edge:Traces:Enabled"]);
        Assert.Equal("true", configuration["Edge:ExpertMetrics"]);
    }

    [Theory]
    [InlineData("coordinator", "ConnectionStrings__rabbitmq", "dancemoe coordinator: error: the coordinator cannot start: the broker refused the login (ACCESS_REFUSED")]
    [InlineData("coordinator", "ConnectionStrings__postgres", "dancemoe coordinator: error: the coordinator cannot start: the database server refused the login (28P01")]
    [InlineData("edge", "ConnectionStrings__rabbitmq", "dancemoe edge: error: edge-1 cannot start its bus: the broker refused the login (ACCESS_REFUSED")]
    public async Task A_coordinator_or_edge_whose_login_is_refused_stops_at_start_naming_the_setting_with_exit_2(string host, string variable, string error)
    {
        // The coordinator rides out a database that does not answer, but one that refuses its login never will.
        await using var cluster = await EdgeCluster.CreateAsync(seed: 61);
        var environment = cluster.CliEnvironment();
        environment[variable] = variable.EndsWith("rabbitmq", StringComparison.Ordinal)
            ? WithWrongPassword(cluster.VirtualHost.Uri)
            : new UriBuilder(LocalEnvironment.PostgresUrl) { Password = "wrong" }.Uri.ToString();
        string[] arguments = host == "edge"
            ? ["edge", "--id", "edge-1", "--model", cluster.ModelDirectory, "--uniform-over", "edge-1", "--no-traces"]
            : ["coordinator", "--layers", "2", "--experts", "4", "--top-k", "1", "--expert-bytes", "100"];

        var (exitCode, _, errors) = await CommandLineTests.RunAsync(arguments, environment);

        Assert.True(exitCode == 2, $"exit {exitCode}: {errors}");
        var line = Assert.Single(errors.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith(error, line, StringComparison.Ordinal);
        Assert.EndsWith($"check the user and password in {variable}", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_analyst_password_file_that_cannot_be_read_is_one_line()
    {
        var line = await CommandLineTests.OneErrorLineAsync(2, ["db", "analyst", "--name", "reader", "--password-file", "/nonexistent/password"]);
        Assert.StartsWith("dancemoe db: error: cannot read the password file /nonexistent/password (", line, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("fifo", "dancemoe db: error: cannot read the password file: {0} is not a regular file")]
    [InlineData("directory", "dancemoe db: error: cannot read the password file: {0} is a directory, not a file")]
    [InlineData("/dev/zero", "dancemoe db: error: cannot read the password file: /dev/zero is not a regular file")]
    [InlineData("endless", "dancemoe db: error: cannot read the password file: {0}: larger than 4098 bytes, too large for a password file (a password is one line of at most 1024 characters)")]
    [InlineData("latin-1", "dancemoe db: error: cannot read the password file: {0}: not UTF-8 text")]
    public async Task An_analyst_password_file_that_is_no_file_endless_or_not_utf8_is_one_line_before_any_database(string kind, string error)
    {
        var directory = Path.Combine(Path.GetTempPath(), $"dancemoe-password-{Guid.NewGuid():N}");
        Directory.CreateDirectory(directory);
        var file = kind.StartsWith('/') ? kind : Path.Combine(directory, kind);
        switch (kind)
        {
            case "fifo":
                using (var mkfifo = System.Diagnostics.Process.Start("mkfifo", [file]))
                {
                    await mkfifo.WaitForExitAsync();
                }

                break;
            case "directory":
                Directory.CreateDirectory(file);
                break;
            case "endless":
                await File.WriteAllTextAsync(file, new string('x', 5000));
                break;
            case "latin-1":
                await File.WriteAllBytesAsync(file, [(byte)'c', (byte)'a', (byte)'f', 0xE9]);
                break;
        }

        try
        {
            var line = await CommandLineTests.OneErrorLineAsync(2,
                ["db", "analyst", "--name", "reader", "--password-file", file], new Dictionary<string, string> { ["ConnectionStrings__postgres"] = ClosedPostgres });
            Assert.Equal(string.Format(System.Globalization.CultureInfo.InvariantCulture, error, file), line);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task A_trace_spill_directory_that_is_a_file_is_one_line_naming_its_key_before_the_edge_serves()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 59);
        var environment = cluster.CliEnvironment();
        environment["Edge__Traces__SpillDirectory"] = "/dev/null";

        var line = await CommandLineTests.OneErrorLineAsync(2,
            ["edge", "--id", "edge-1", "--model", cluster.ModelDirectory, "--uniform-over", "edge-1"], environment);
        Assert.StartsWith("dancemoe edge: error: Edge:Traces:SpillDirectory '/dev/null' cannot hold the spill files: ", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task More_intra_op_threads_than_cores_is_one_line_naming_the_key_before_the_model_loads()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 59);
        var environment = cluster.CliEnvironment();
        environment["Edge__IntraOpThreads"] = (Environment.ProcessorCount + 1).ToString(CultureInfo.InvariantCulture);

        var line = await CommandLineTests.OneErrorLineAsync(2,
            ["edge", "--id", "edge-1", "--model", cluster.ModelDirectory, "--uniform-over", "edge-1", "--no-traces"], environment);
        Assert.StartsWith($"dancemoe edge: error: Edge:IntraOpThreads {Environment.ProcessorCount + 1} is more than this machine's {Environment.ProcessorCount} cores", line, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(129, "Edge:ComputeClass: longer than 128 characters, the most the coordinator records")]
    [InlineData(-1, "Edge:ComputeClass has a control character: one line of text")]
    public async Task A_compute_class_the_coordinator_would_refuse_is_one_line_naming_the_key_before_the_model_loads(int length, string error)
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 59);

        var line = await CommandLineTests.OneErrorLineAsync(2,
            ["edge", "--id", "edge-1", "--model", cluster.ModelDirectory, "--uniform-over", "edge-1", "--no-traces", "--compute-class", length > 0 ? new string('x', length) : "gpu\tname"],
            cluster.CliEnvironment());
        Assert.Equal("dancemoe edge: error: " + error, line);
    }

    [Theory]
    [InlineData("generate", "--model", "/nonexistent", "--prompt")]
    [InlineData("infer", "--edge", "edge-1", "--prompt")]
    public async Task An_argument_that_is_not_utf8_is_one_line_before_anything_runs(params string[] arguments)
    {
        // Only a shell can hand a process bytes that are not UTF-8: ProcessStartInfo encodes its strings.
        var start = new ProcessStartInfo("sh") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        start.Environment["ConnectionStrings__rabbitmq"] = ClosedRabbitMq;
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add("exec dotnet \"$0\" \"$@\" \"$(printf 'a\\377b')\"");
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "dancemoe.dll"));
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var errors = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(2, process.ExitCode);
        Assert.Empty(await output);
        Assert.Equal("dancemoe: argument 5 is not UTF-8 text (byte 0xFF at offset 1): prompts, paths and ids are read as UTF-8", (await errors).TrimEnd('\n'));
    }

    [Theory]
    [MemberData(nameof(OddEdgeIds))]
    public async Task Infer_to_an_odd_edge_id_is_a_one_line_usage_error_that_sends_nothing(string edge)
    {
        // The broker is unreachable: an attempt to reach it would exit 3, so exit 2 also shows nothing was sent.
        var line = await CommandLineTests.OneErrorLineAsync(2,
            ["infer", "--edge", edge, "--prompt", "hello", "--max-tokens", "1"], new Dictionary<string, string> { ["ConnectionStrings__rabbitmq"] = ClosedRabbitMq });
        Assert.StartsWith("dancemoe infer: --edge: ", line, StringComparison.Ordinal);
        Assert.True(line.Length < 400, line);
    }

    [Theory]
    [MemberData(nameof(OddEdgeIds))]
    public async Task An_edge_with_an_odd_id_is_a_one_line_usage_error(string id)
    {
        var line = await CommandLineTests.OneErrorLineAsync(2, ["edge", "--id", id, "--model", "onnx/default"]);
        Assert.StartsWith("dancemoe edge: --id: ", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_odd_id_in_uniform_over_is_a_one_line_usage_error()
    {
        var line = await CommandLineTests.OneErrorLineAsync(2,
            ["edge", "--id", "edge-1", "--model", "onnx/default", "--placement", "uniform", "--uniform-over", "edge-1,edge-2-control"]);
        Assert.StartsWith("dancemoe edge: --uniform-over: ", line, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("[null]", "placement v1 has an empty (null) assignment")]
    [InlineData("[{\"layer\": 0, \"expert\": 0, \"servers\": [\"../x\"]}]", "placement v1 gives expert 0.0 to a server that is no edge: edge id '../x' is not an edge id")]
    [InlineData("[{\"layer\": 0, \"expert\": 0, \"servers\": [\"edge-2-experts\"]}]", "placement v1 gives expert 0.0 to a server that is no edge: edge id 'edge-2-experts' names queue")]
    public async Task A_placement_file_with_a_null_assignment_or_an_odd_server_stops_the_edge_in_one_line(string assignments, string error)
    {
        var directory = Path.Combine(Path.GetTempPath(), $"dancemoe-placement-{Guid.NewGuid():N}");
        TinyCheckpoint.Write(Path.Combine(directory, "ckpt"), new TinyOptions { Seed = 3 });
        OnnxExporter.Export(Checkpoint.Open(Path.Combine(directory, "ckpt")), Path.Combine(directory, "onnx"), TensorDtype.F32);
        var file = Path.Combine(directory, "placement.json");
        await File.WriteAllTextAsync(file, $"{{\"version\": 1, \"assignments\": {assignments}}}");
        try
        {
            var line = await CommandLineTests.OneErrorLineAsync(1,
                ["edge", "--id", "edge-1", "--model", Path.Combine(directory, "onnx"), "--placement", file, "--no-traces"]);
            Assert.StartsWith($"dancemoe edge: error: {file}: {error}", line, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task A_placement_file_that_is_a_fifo_stops_the_edge_in_one_line_instead_of_waiting_for_a_writer()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 61);
        var fifo = Path.Combine(Path.GetTempPath(), $"dancemoe-placement-{Guid.NewGuid():N}.json");
        using (var mkfifo = System.Diagnostics.Process.Start("mkfifo", [fifo]))
        {
            await mkfifo.WaitForExitAsync();
        }

        try
        {
            var line = await CommandLineTests.OneErrorLineAsync(1,
                ["edge", "--id", "edge-1", "--model", cluster.ModelDirectory, "--placement", fifo, "--no-traces"], cluster.CliEnvironment());
            Assert.Equal($"dancemoe edge: error: {fifo} is not a regular file", line);
        }
        finally
        {
            File.Delete(fifo);
        }
    }

    [Theory]
    [MemberData(nameof(OddEdgeIds))]
    public void The_edge_hosts_options_refuse_an_odd_id_as_the_command_line_does(string id)
    {
        var options = new EdgeOptions { Id = id, ModelDirectory = "onnx/default" };
        var results = new List<ValidationResult>();

        Assert.False(Validator.TryValidateObject(options, new ValidationContext(options), results, validateAllProperties: true));
        Assert.Equal(EdgeQueues.Problem(id), Assert.Single(results).ErrorMessage);
    }

    [Theory]
    [InlineData("edge-1")]
    [InlineData("7")]
    [InlineData("edge-gpu-a")]
    public void An_ordinary_edge_id_passes(string id)
    {
        var options = new EdgeOptions { Id = id, ModelDirectory = "onnx/default" };

        Assert.Null(EdgeQueues.Problem(id));
        Assert.True(Validator.TryValidateObject(options, new ValidationContext(options), [], validateAllProperties: true));
    }

    [Fact]
    public async Task Bench_echo_started_by_hand_serves_its_queue_as_the_edge_it_stands_in_for()
    {
        var queue = $"edge-echo-{Guid.NewGuid():N}";
        var ready = Path.Combine(Path.GetTempPath(), queue + ".ready");
        var start = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in new[] { Path.Combine(AppContext.BaseDirectory, "dancemoe.dll"), "bench", "echo", "--queue", queue, "--ready-file", ready })
        {
            start.ArgumentList.Add(argument);
        }

        using var echo = Process.Start(start)!;
        var errors = echo.StandardError.ReadToEndAsync();
        try
        {
            for (var waited = 0; !File.Exists(ready) && !echo.HasExited && waited < 300; waited++)
            {
                await Task.Delay(200);
            }

            Assert.True(File.Exists(ready), $"bench echo did not serve {queue} in 60 s as the local users run it: {(echo.HasExited ? await errors : "still starting")}");
        }
        finally
        {
            echo.Kill(entireProcessTree: true);
            await echo.WaitForExitAsync();
            File.Delete(ready);
            await BusClient.DeleteQueueAsync(LocalEnvironment.RabbitMqUriFor(BusRole.Edge), queue, CancellationToken.None);
        }
    }

    [Fact]
    public async Task Bench_echo_on_a_queue_the_broker_refuses_its_user_is_one_line_and_exit_2_instead_of_a_hang()
    {
        var queue = $"edge-echo-{Guid.NewGuid():N}";
        var environment = new Dictionary<string, string> { ["ConnectionStrings__rabbitmq_edge"] = LocalEnvironment.RabbitMqUriFor(BusRole.Client) };

        var line = await CommandLineTests.OneErrorLineAsync(2, ["bench", "echo", "--queue", queue], environment);

        Assert.Contains($"cannot serve {queue}: the broker refused access (ACCESS_REFUSED", line, StringComparison.Ordinal);
        Assert.Contains("refused for user 'dancemoe-client'", line, StringComparison.Ordinal);
        Assert.Contains("check the user in ConnectionStrings__rabbitmq_edge", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bench_echo_with_the_broker_down_is_one_line_naming_the_broker_and_its_setting_and_exit_3_instead_of_a_hang()
    {
        var environment = new Dictionary<string, string> { ["ConnectionStrings__rabbitmq_edge"] = ClosedRabbitMq };
        var started = Stopwatch.StartNew();

        var line = await CommandLineTests.OneErrorLineAsync(3, ["bench", "echo", "--queue", "edge-echo-down"], environment);

        Assert.StartsWith("dancemoe bench: error: cannot serve edge-echo-down: cannot connect to RabbitMQ at amqp://dancemoe:***@127.0.0.1:1/dancemoe", line, StringComparison.Ordinal);
        Assert.Contains("ConnectionStrings__rabbitmq_edge", line, StringComparison.Ordinal);
        Assert.True(started.Elapsed < TimeSpan.FromSeconds(30), $"took {started.Elapsed}");
    }

    /// <summary>The broker URI with another password; not through <see cref="UriBuilder"/>, which takes no list of nodes (<c>host:5682,host:5683</c>).</summary>
    private static string WithWrongPassword(string rabbitMqUri)
    {
        var broker = RabbitMqOptions.Parse(rabbitMqUri) with { Password = "wrong" };
        return broker.UriFor(broker.VirtualHost);
    }
}
