using System.Text.Json;

namespace DanceMoE.Cli.Commands;

/// <summary>
/// <c>dancemoe placement run-now</c>: runs the coordinator's placement job now (<see cref="PlacementJobTrigger"/>) and,
/// unless told not to, waits for its decision.
/// </summary>
public static class PlacementRunNow
{
    public const string Usage = "placement run-now [--no-wait] [--timeout-s 300] [--json]";

    public static async Task<int> RunAsync(Arguments args, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        var noWait = args.Flag("no-wait");
        var timeout = TimeSpan.FromSeconds(args.Double("timeout-s", 300, 1, 86_400));
        var asJson = args.Flag("json");
        args.EnsureAllUsed(1);

        var commandId = await PlacementJobTrigger.SendAsync(CliEnvironment.RabbitMqUri, $"cli@{Environment.MachineName}", cancellationToken).ConfigureAwait(false);
        if (noWait)
        {
            Console.WriteLine($"run-now {commandId} sent");
            return ExitCodes.Ok;
        }

        var decision = await PlacementJobTrigger.WaitForDecisionAsync(CliEnvironment.PostgresUrl, commandId, timeout, null, cancellationToken).ConfigureAwait(false);
        Console.WriteLine(asJson ? JsonSerializer.Serialize(StatusCommand.DecisionJson(decision), StatusCommand.Json) : StatusCommand.DecisionLine(decision));
        return ExitCodes.Ok;
    }
}
