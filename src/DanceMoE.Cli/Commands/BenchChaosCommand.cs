using System.CommandLine;
using DanceMoE.Cli.Verbs;
using DanceMoE.Lab.Benchmarks;

namespace DanceMoE.Cli.Commands;

/// <summary><c>dancemoe bench chaos</c>: one fault at a time under load (see <see cref="ChaosBenchmark"/>).</summary>
public static class BenchChaosCommand
{
    public static Command Create()
    {
        var faults = CliOptions.Text("faults", $"faults to inject, in order; one named twice runs twice ({string.Join(",", ChaosBenchmark.Faults)})", string.Join(",", ChaosBenchmark.Faults));
        var keepLogs = CliOptions.Flag("keep-logs", "keep the processes' logs");
        var json = CliOptions.Flag("json", "print JSON");
        var command = new Command("chaos", "faults under load: edge, broker, broker node, PostgreSQL, coordinator") { faults, keepLogs, json };
        command.SetAction(async (result, cancellationToken) =>
        {
            var settings = new ChaosBenchmarkSettings
            {
                Faults = result.GetRequiredValue(faults).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                KeepLogs = result.GetValue(keepLogs),
                Json = result.GetValue(json),
            };
            return await Progress.RunAsync("bench chaos", log => ChaosBenchmark.RunAsync(settings, Console.Out, log, cancellationToken)).ConfigureAwait(false) ? ExitCodes.Ok : ExitCodes.Failed;
        });
        return command;
    }
}
