using System.Diagnostics;
using System.Globalization;

namespace DanceMoE.EndToEndTests;

/// <summary>
/// A real coordinator process (<c>dotnet dancemoe.dll coordinator ...</c>) on a test's virtual host and database, with
/// its cron far away (only run-now fires the job) and short migration timeouts; it can be killed and started again.
/// </summary>
public sealed class CoordinatorProcess : IAsyncDisposable
{
    private readonly string _directory;
    private readonly string _rabbitMq;
    private readonly string _database;
    private readonly string[] _arguments;
    private Process? _process;
    private string _log = "";
    private int _starts;

    public CoordinatorProcess(string directory, string rabbitMq, string database, string modelDirectory, params string[] extra)
    {
        _directory = directory;
        _rabbitMq = rabbitMq;
        _database = database;
        _arguments =
        [
            "coordinator", "--model", modelDirectory, "--cron", "0 0 0 1 1 ? 2099", "--heartbeat-seconds", "1", "--missed-heartbeats", "3",
            "--drain-ms", "100", "--timeout-scan-ms", "100", .. extra,
        ];
    }

    public async Task StartAsync()
    {
        _starts++;
        var ready = Path.Combine(_directory, $"coordinator-{_starts}.ready");
        _log = Path.Combine(_directory, $"coordinator-{_starts}.log");
        var start = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "dancemoe.dll"));
        foreach (var argument in _arguments.Append("--ready-file").Append(ready))
        {
            start.ArgumentList.Add(argument);
        }

        start.Environment["ConnectionStrings__rabbitmq"] = _rabbitMq;
        start.Environment["ConnectionStrings__postgres"] = _database;
        _process = Process.Start(start)!;
        var writer = new StreamWriter(_log) { AutoFlush = true };
        _process.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (writer) { writer.WriteLine(e.Data); } } };
        _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (writer) { writer.WriteLine(e.Data); } } };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        var deadline = DateTime.UtcNow.AddSeconds(90);
        while (!File.Exists(ready))
        {
            if (_process.HasExited || DateTime.UtcNow > deadline)
            {
                throw new InvalidOperationException($"the coordinator did not start: {Log()}");
            }

            await Task.Delay(100);
        }
    }

    public async Task KillAsync()
    {
        _process!.Kill(entireProcessTree: true);
        await _process.WaitForExitAsync();
    }

    public string Log()
    {
        try
        {
            using var stream = new FileStream(_log, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            return new StreamReader(stream).ReadToEnd();
        }
        catch (IOException)
        {
            return "";
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_process is { HasExited: false })
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }

        _process?.Dispose();
    }

    public static string Invariant(double value) => value.ToString(CultureInfo.InvariantCulture);
}
