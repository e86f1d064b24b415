using DanceMoE.Lab.Demo;

namespace DanceMoE.Cli.Commands;

/// <summary><c>dancemoe demo</c>: the closed loop of <see cref="ClosedLoopDemo"/>, from the command line.</summary>
public sealed class DemoCommand : ICliCommand
{
    public string Verb => "demo";

    public string Usage => "demo [--no-services] [--model DIR] [--max-tokens 48] [--memory-mb N] [--keep]   the closed loop: a cluster, the coordinator, a migration, the same answers with more local expert calls";

    public async Task<int> RunAsync(Arguments args, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        var settings = new DemoSettings
        {
            StartServices = !args.Flag("no-services"),
            Model = args.Option("model"),
            MaxTokens = args.Int("max-tokens", 48, 1, 512),
            MemoryMb = args.Option("memory-mb") is null ? null : args.Int("memory-mb", 0, 1, 1_048_576),
            Keep = args.Flag("keep"),
        };
        args.EnsureAllUsed(0);
        var result = await ClosedLoopDemo.RunAsync(settings, Console.Out, cancellationToken).ConfigureAwait(false);
        return result.Succeeded ? ExitCodes.Ok : ExitCodes.Failed;
    }
}
