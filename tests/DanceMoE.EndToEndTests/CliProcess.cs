using System.Diagnostics;

namespace DanceMoE.EndToEndTests;

/// <summary>
/// One <c>dotnet dancemoe.dll VERB ...</c> process of the tests: its output goes to a log file, and it is ready when it
/// writes its <c>--ready-file</c>.
/// </summary>
public sealed class CliProcess : IAsyncDisposable
{
    private CliProcess(Process process, string log, string ready)
    {
        Process = process;
        LogFile = log;
        ReadyFile = ready;
    }

    public Process Process { get; }

    public string LogFile { get; }

    public string ReadyFile { get; }

    /// <summary>Starts the CLI with <paramref name="arguments"/> plus <c>--ready-file</c>, with <paramref name="environment"/> added.</summary>
    public static CliProcess Start(IEnumerable<string> arguments, IReadOnlyDictionary<string, string> environment, string log, string ready)
    {
        File.Delete(ready);
        var start = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "dancemoe.dll"));
        foreach (var argument in arguments.Append("--ready-file").Append(ready))
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var (name, value) in environment)
        {
            start.Environment[name] = value;
        }

        var process = Process.Start(start)!;
        var writer = new StreamWriter(log) { AutoFlush = true };
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (writer) { writer.WriteLine(e.Data); } } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (writer) { writer.WriteLine(e.Data); } } };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return new CliProcess(process, log, ready);
    }

    /// <summary>Waits for the ready file; a process that exits or takes longer than <paramref name="until"/> fails with its log.</summary>
    public async Task WaitUntilReadyAsync(string name, DateTime until)
    {
        while (!File.Exists(ReadyFile))
        {
            if (Process.HasExited || DateTime.UtcNow > until)
            {
                throw new InvalidOperationException($"{name} did not start: {Log()}");
            }

            await Task.Delay(100);
        }
    }

    public string Log()
    {
        try
        {
            using var stream = new FileStream(LogFile, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            return new StreamReader(stream).ReadToEnd();
        }
        catch (IOException)
        {
            return "";
        }
    }

    public async Task KillAsync()
    {
        if (!Process.HasExited)
        {
            Process.Kill(entireProcessTree: true);
        }

        await Process.WaitForExitAsync();
    }

    public async ValueTask DisposeAsync()
    {
        await KillAsync();
        Process.Dispose();
    }
}
