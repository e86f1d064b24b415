using System.Diagnostics;

namespace DanceMoE.IntegrationTests.Traces;

/// <summary>
/// A PostgreSQL 15 cluster of the test's own (initdb in /var/tmp, a free loopback port), so the test can stop and
/// start the server without touching the shared services. Needs root (it runs the server as user postgres).
/// </summary>
public sealed class PrivatePostgres : IAsyncDisposable
{
    private const string Bin = "/usr/lib/postgresql/15/bin";
    private readonly string _directory;
    private readonly int _port;
    private readonly string _password = Guid.NewGuid().ToString("N");

    private PrivatePostgres(string directory, int port)
    {
        _directory = directory;
        _port = port;
    }

    public string ConnectionString(string database) => $"Host=127.0.0.1;Port={_port};Database={database};Username=postgres;Password={_password};Pooling=false";

    /// <summary>Creates a database on this server, applies the migrations, and returns its connection string.</summary>
    public async Task<string> CreateMigratedDatabaseAsync(string name)
    {
        await using (var admin = new Npgsql.NpgsqlConnection(ConnectionString("postgres")))
        {
            await admin.OpenAsync();
            await using var create = new Npgsql.NpgsqlCommand($"CREATE DATABASE {name}", admin);
            await create.ExecuteNonQueryAsync();
        }

        var connectionString = ConnectionString(name);
        await DanceMoE.Migrations.DatabaseMigrator.MigrateAsync(connectionString, TimeSpan.FromSeconds(10), CancellationToken.None);
        return connectionString;
    }

    public static async Task<PrivatePostgres> StartAsync()
    {
        var directory = Path.Combine("/var/tmp", TestServices.UniqueName("dancemoe_pgtest"));
        Directory.CreateDirectory(directory);
        await RunAsync("chown", "postgres:postgres", directory);
        var server = new PrivatePostgres(directory, TestPorts.Free());
        var passwordFile = Path.Combine(directory, "password");
        await File.WriteAllTextAsync(passwordFile, server._password);
        await RunAsync("chown", "postgres:postgres", passwordFile);
        await RunAsync("runuser", "-u", "postgres", "--", $"{Bin}/initdb", "-D", server.Data, "-U", "postgres", "--auth=scram-sha-256", $"--pwfile={passwordFile}", "-E", "UTF8", "--locale=C.UTF-8");
        File.Delete(passwordFile);
        await server.StartAgainAsync();
        return server;
    }

    private string Data => Path.Combine(_directory, "data");

    public Task StartAgainAsync() => RunAsync(
        "runuser", "-u", "postgres", "--", $"{Bin}/pg_ctl", "-D", Data, "-l", Path.Combine(_directory, "postgres.log"), "-w",
        "-o", $"-p {_port} -k {_directory} -c listen_addresses=127.0.0.1 -c fsync=off", "start");

    /// <summary>Stops the server the hard way: no clean shutdown, crash recovery at the next start.</summary>
    public Task StopImmediatelyAsync() => RunAsync("runuser", "-u", "postgres", "--", $"{Bin}/pg_ctl", "-D", Data, "-m", "immediate", "-w", "stop");

    public async ValueTask DisposeAsync()
    {
        try
        {
            await StopImmediatelyAsync();
        }
        catch (InvalidOperationException)
        {
            // Already stopped.
        }

        Directory.Delete(_directory, recursive: true);
    }

    private static async Task RunAsync(string file, params string[] arguments)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {file}");
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{file} {string.Join(' ', arguments)} exited with {process.ExitCode}: {await error}{await output}");
        }
    }
}
