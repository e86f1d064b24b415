using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using DanceMoE.Data;
using DanceMoE.Hosting;
using DanceMoE.Operations;
using Npgsql;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>
/// The isolated set-up of one <c>bench shift</c> run: a RabbitMQ virtual host and a PostgreSQL database of its own
/// (created and migrated here, deleted and dropped on dispose), a folder for the logs, and the processes (edges,
/// coordinator) started on them. Dispose stops every process it started (SIGTERM, then SIGKILL), whatever happened.
/// </summary>
internal sealed class ShiftEnvironment : IAsyncDisposable
{
    private readonly List<ChildProcess> _processes = [];
    private readonly RabbitMqBroker _broker;
    private readonly NpgsqlConnectionStringBuilder _server;
    private readonly Action<string> _log;
    private bool _virtualHostCreated;
    private bool _databaseCreated;

    private ShiftEnvironment(Action<string> log)
    {
        _log = log;
        var suffix = Guid.NewGuid().ToString("N")[..8];
        VirtualHost = $"dancemoe-shift-{suffix}";
        Database = $"dancemoe_shift_{suffix}";
        Directory = Path.Combine(LocalEnvironment.StateDirectory, $"bench-shift-{suffix}");
        // Its own virtual host, made through the management API: the admin's, which every process of the run uses there.
        _broker = RabbitMqOptions.Parse(LocalEnvironment.RabbitMqUriFor(BusRole.Admin));
        _server = new NpgsqlConnectionStringBuilder(DatabaseOptions.ToNpgsql(LocalEnvironment.PostgresUrl));
    }

    public string VirtualHost { get; }

    public string Database { get; }

    /// <summary>Logs, ready files, placement file and trace spill of this run.</summary>
    public string Directory { get; }

    /// <summary>The run's virtual host on the configured broker.</summary>
    public string RabbitMqUri => _broker.UriFor(VirtualHost);

    /// <summary>The run's database on the configured server.</summary>
    public string PostgresUrl =>
        $"postgresql://{Uri.EscapeDataString(_server.Username ?? "")}:{Uri.EscapeDataString(_server.Password ?? "")}@{_server.Host}:{_server.Port}/{Database}";

    /// <summary>Leave the folder (logs) in place on dispose: set when the run failed.</summary>
    public bool KeepDirectory { get; set; }

    public IReadOnlyList<ChildProcess> Processes => _processes;

    public static async Task<ShiftEnvironment> CreateAsync(Action<string> log, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(log);
        var environment = new ShiftEnvironment(log);
        var created = false;
        try
        {
            System.IO.Directory.CreateDirectory(environment.Directory);
            await environment.CreateVirtualHostAsync(cancellationToken).ConfigureAwait(false);
            await environment.CreateDatabaseAsync(cancellationToken).ConfigureAwait(false);
            await LocalDatabase.MigrateAsync(environment.PostgresUrl, TimeSpan.FromSeconds(30), cancellationToken).ConfigureAwait(false);
            created = true;
            return environment;
        }
        finally
        {
            // Whatever failed half-way, what was created so far is deleted.
            if (!created)
            {
                await environment.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// Starts <c>dotnet dancemoe.dll ARGS --ready-file FILE</c> on the run's broker and database, output to NAME.log, with
    /// <paramref name="environment"/> added to its environment (settings with no flag, e.g. <c>Edge__ReplayTrace</c>).
    /// </summary>
    public ChildProcess Start(string name, IReadOnlyList<string> arguments, IReadOnlyDictionary<string, string>? environment = null)
    {
        ArgumentNullException.ThrowIfNull(arguments);
        var log = Path.Combine(Directory, name + ".log");
        var ready = Path.Combine(Directory, name + ".ready");
        File.Delete(ready);
        // Optimised code from the first request: with tiered compilation, a loaded 2-core machine runs the edges' hot loops
        // unoptimised for a minute or more, which would make the first phase look slower than the last.
        var start = CliProcesses.StartInfo([.. arguments, "--ready-file", ready], log, detached: false, serving: true);
        start.Environment["ConnectionStrings__" + RabbitMqOptions.ConnectionName] = RabbitMqUri;
        start.Environment["Edge__CoordinatorUser"] = _broker.Username;
        start.Environment["ConnectionStrings__" + DatabaseOptions.ConnectionName] = PostgresUrl;
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }
        var process = Process.Start(start) ?? throw new OperationException($"cannot start {name}");
        var child = new ChildProcess(name, process, log, ready);
        _processes.Add(child);
        return child;
    }

    /// <summary>Kills process <paramref name="name"/> with SIGKILL, as a crash would, and forgets it (it can be started again).</summary>
    public void Kill(string name)
    {
        var child = _processes.Single(c => c.Name == name);
        LocalCluster.Signal("KILL", child.Process.Id);
        child.Process.WaitForExit();
        child.Process.Dispose();
        _processes.Remove(child);
    }

    /// <summary>Waits until every process started so far has written its ready file.</summary>
    public async Task WaitReadyAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + timeout;
        foreach (var child in _processes)
        {
            while (!File.Exists(child.ReadyFile))
            {
                EnsureRunning();
                if (DateTime.UtcNow > deadline)
                {
                    throw new OperationException($"{child.Name} not ready after {timeout.TotalSeconds:F0} s; its log ({child.LogFile}) ends with:{Environment.NewLine}{child.Tail(5)}");
                }

                await Task.Delay(100, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Fails the run, with the log's last lines, when a process it started has exited.</summary>
    public void EnsureRunning()
    {
        foreach (var child in _processes)
        {
            if (child.Process.HasExited)
            {
                throw new OperationException(
                    $"{child.Name} exited (code {child.Process.ExitCode}); its log ({child.LogFile}) ends with:{Environment.NewLine}{child.Tail(8)}");
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopProcessesAsync().ConfigureAwait(false);
        if (_databaseCreated)
        {
            await DropDatabaseAsync().ConfigureAwait(false);
        }

        if (_virtualHostCreated)
        {
            try
            {
                using var management = ManagementClient();
                using var response = await management.DeleteAsync(new Uri($"api/vhosts/{VirtualHost}", UriKind.Relative)).ConfigureAwait(false);
                _virtualHostCreated = !response.IsSuccessStatusCode;
            }
            catch (HttpRequestException ex)
            {
                _log($"cannot delete virtual host {VirtualHost}: {ex.Message}");
            }
        }

        if (KeepDirectory)
        {
            _log($"logs kept in {Directory}");
        }
        else if (System.IO.Directory.Exists(Directory))
        {
            try
            {
                System.IO.Directory.Delete(Directory, recursive: true);
            }
            catch (IOException ex)
            {
                _log($"cannot delete {Directory}: {ex.Message}");
            }
        }
    }

    private async Task StopProcessesAsync()
    {
        foreach (var child in _processes.Where(c => !c.Process.HasExited))
        {
            LocalCluster.Signal("TERM", child.Process.Id);
        }

        foreach (var child in _processes)
        {
            using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            try
            {
                await child.Process.WaitForExitAsync(grace.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                _log($"{child.Name} did not stop within 20 s of SIGTERM: killing it");
                child.Process.Kill(entireProcessTree: true);
                await child.Process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            }

            child.Process.Dispose();
        }

        _processes.Clear();
    }

    private async Task CreateVirtualHostAsync(CancellationToken cancellationToken)
    {
        try
        {
            await PutAsync($"api/vhosts/{VirtualHost}", "{}", cancellationToken).ConfigureAwait(false);
            _virtualHostCreated = true;
            await PutAsync($"api/permissions/{VirtualHost}/{Uri.EscapeDataString(_broker.Username)}", """{"configure":".*","write":".*","read":".*"}""", cancellationToken)
                .ConfigureAwait(false);
        }
        catch (HttpRequestException ex)
        {
            throw new OperationException(
                $"cannot create virtual host {VirtualHost} through the RabbitMQ management API at {ManagementUrl}: {ex.Message} (is it up? ./dancemoe services up)",
                OperationFailure.Unavailable,
                ex);
        }
    }

    private async Task CreateDatabaseAsync(CancellationToken cancellationToken)
    {
        try
        {
            await AdminDatabase.CreateDatabaseAsync(LocalEnvironment.PostgresUrl, Database, cancellationToken).ConfigureAwait(false);
            _databaseCreated = true;
        }
        catch (NpgsqlException ex)
        {
            throw new OperationException($"cannot create database {Database} at {_server.Host}:{_server.Port}: {ex.Message} (is it up? ./dancemoe services up)", OperationFailure.Unavailable, ex);
        }
    }

    private async Task DropDatabaseAsync()
    {
        NpgsqlConnection.ClearAllPools();
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await AdminDatabase.DropDatabaseAsync(LocalEnvironment.PostgresUrl, Database, CancellationToken.None).ConfigureAwait(false);
                _databaseCreated = false;
                return;
            }
            catch (NpgsqlException ex) when (attempt < 10)
            {
                _log($"dropping database {Database} failed ({ex.Message}); retrying");
                await Task.Delay(300).ConfigureAwait(false);
            }
            catch (NpgsqlException ex)
            {
                _log($"cannot drop database {Database}: {ex.Message}; drop it by hand");
                return;
            }
        }
    }

    private static string ManagementUrl => LocalEnvironment.RabbitMqManagementUrl;

    private HttpClient ManagementClient()
    {
        var client = new HttpClient { BaseAddress = new Uri(ManagementUrl), Timeout = TimeSpan.FromSeconds(15) };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue(
            "Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{_broker.Username}:{_broker.Password}")));
        return client;
    }

    private async Task PutAsync(string path, string json, CancellationToken cancellationToken)
    {
        using var management = ManagementClient();
        using var content = new StringContent(json, Encoding.UTF8, "application/json");
        using var response = await management.PutAsync(new Uri(path, UriKind.Relative), content, cancellationToken).ConfigureAwait(false);
        response.EnsureSuccessStatusCode();
    }
}

/// <summary>One process the run started: its name (edge id or <c>coordinator</c>), log and ready file.</summary>
internal sealed record ChildProcess(string Name, Process Process, string LogFile, string ReadyFile)
{
    public string Tail(int lines)
    {
        try
        {
            using var stream = new FileStream(LogFile, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            using var reader = new StreamReader(stream);
            return string.Join(Environment.NewLine, reader.ReadToEnd().Split('\n').Where(l => l.Length > 0).TakeLast(lines));
        }
        catch (IOException)
        {
            return "";
        }
    }
}
