using System.CommandLine;
using DanceMoE.Lab.Benchmarks;

namespace DanceMoE.Cli.Commands;

/// <summary><c>dancemoe bench replay</c>: its flags come from <see cref="ReplayBenchmarkSettings.Flags"/>; the work is <see cref="ReplayBenchmark"/>.</summary>
public static class BenchReplayCommand
{
    public static Command Create()
    {
        var command = new Command("replay", ReplayBenchmarkSettings.Summary);
        var options = ReplayBenchmarkSettings.Flags.Select(f => f.Switch ? (Option)new Option<bool>("--" + f.Name) { Description = f.Description }
            : new Option<string>("--" + f.Name) { Description = f.Description + (f.Default is null ? "" : $" (default {f.Default})"), Required = f.Required }).ToList();
        options.ForEach(command.Options.Add);
        command.SetAction(async (result, cancellationToken) => (await Verbs.Progress.RunAsync("bench replay", log => ReplayBenchmark.RunAsync(
            ReplayBenchmarkSettings.Parse(options.ToDictionary(o => o.Name.TrimStart('-'), o => o is Option<bool> flag ? (result.GetValue(flag) ? "true" : null) : result.GetValue((Option<string>)o))),
            Console.Out, log, cancellationToken)).ConfigureAwait(false)).All(row => row.Failed == 0) ? ExitCodes.Ok : ExitCodes.Failed);
        return command;
    }
}
