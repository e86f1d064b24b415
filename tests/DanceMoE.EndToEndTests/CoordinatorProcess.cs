using System.Globalization;

namespace DanceMoE.EndToEndTests;

/// <summary>
/// A real coordinator process (<c>dotnet dancemoe.dll coordinator ...</c>) on a test's virtual host and database, with
/// its cron far away (only run-now fires the job) and short drains and timeout scans; it can be killed and started again.
/// </summary>
public sealed class CoordinatorProcess(string directory, string rabbitMq, string database, string modelDirectory, params string[] extra) : IAsyncDisposable
{
    private readonly string[] _arguments =
    [
        "coordinator", "--model", modelDirectory, "--cron", "0 0 0 1 1 ? 2099", "--heartbeat-seconds", "1", "--missed-heartbeats", "3",
        "--drain-ms", "100", "--timeout-scan-ms", "100", .. extra,
    ];

    private CliProcess? _process;
    private int _starts;

    public async Task StartAsync()
    {
        _starts++;
        var environment = new Dictionary<string, string> { ["ConnectionStrings__rabbitmq"] = rabbitMq, ["ConnectionStrings__postgres"] = database };
        _process = CliProcess.Start(_arguments, environment, Path.Combine(directory, $"coordinator-{_starts}.log"), Path.Combine(directory, $"coordinator-{_starts}.ready"));
        await _process.WaitUntilReadyAsync("the coordinator", DateTime.UtcNow.AddSeconds(90));
    }

    public Task KillAsync() => _process!.KillAsync();

    public string Log() => _process?.Log() ?? "";

    public async ValueTask DisposeAsync()
    {
        if (_process is not null)
        {
            await _process.DisposeAsync();
        }
    }

    public static string Invariant(double value) => value.ToString(CultureInfo.InvariantCulture);
}
