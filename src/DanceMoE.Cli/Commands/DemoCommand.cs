using System.CommandLine;
using DanceMoE.Cli.Verbs;
using DanceMoE.Lab.Demo;

namespace DanceMoE.Cli.Commands;

/// <summary><c>dancemoe demo</c>: the closed loop of <see cref="ClosedLoopDemo"/>, from the command line.</summary>
public static class DemoCommand
{
    /// <summary>The <c>demo</c> verb.</summary>
    public static Command Create()
    {
        var noServices = CliOptions.Flag("no-services", "do not start the local RabbitMQ and PostgreSQL");
        var model = CliOptions.Text("model", "exported model or checkpoint (default: onnx/default, else a tiny seeded one)", valueName: "DIR");
        var maxTokens = CliOptions.Int("max-tokens", 48, "tokens per answer", 1, 512);
        var memoryMb = CliOptions.OptionalInt("memory-mb", "memory budget per edge, MiB (default: what the uniform start needs)", 1, 1_048_576);
        var keep = CliOptions.Flag("keep", "leave the cluster running afterwards");
        var algorithm = CliOptions.Algorithm();
        var command = new Command("demo", "the closed loop: a cluster, the coordinator, a migration, the same answers with more local expert calls")
        {
            noServices, model, maxTokens, memoryMb, keep, algorithm,
        };
        command.SetAction((result, cancellationToken) => RunAsync(
            new DemoSettings
            {
                StartServices = !result.GetValue(noServices),
                Model = result.GetValue(model),
                MaxTokens = result.GetValue(maxTokens),
                MemoryMb = result.GetValue(memoryMb),
                Keep = result.GetValue(keep),
                Algorithm = result.GetRequiredValue(algorithm),
            },
            cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(DemoSettings settings, CancellationToken cancellationToken)
    {
        var result = await ClosedLoopDemo.RunAsync(settings, Console.Out, cancellationToken).ConfigureAwait(false);
        return result.Succeeded ? ExitCodes.Ok : ExitCodes.Failed;
    }
}
