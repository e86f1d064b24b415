using System.CommandLine;
using System.Text.Json;
using DanceMoE.Cli.Verbs;

namespace DanceMoE.Cli.Commands;

/// <summary>
/// <c>dancemoe placement run-now</c>: runs the coordinator's placement job now (<see cref="PlacementJobTrigger"/>) and,
/// unless told not to, waits for its decision.
/// </summary>
public static class PlacementRunNow
{
    /// <summary>The <c>run-now</c> sub-verb of <c>placement</c>.</summary>
    public static Command Create()
    {
        var noWait = CliOptions.Flag("no-wait", "return once the command is sent");
        var timeout = CliOptions.Double("timeout-s", 300, "how long to wait for the decision", 1, 86_400);
        var json = CliOptions.Flag("json", "print the decision as JSON");
        var command = new Command("run-now", "ask the coordinator to run its placement job now and wait for its decision") { noWait, timeout, json };
        command.SetAction((result, cancellationToken) => RunAsync(
            result.GetValue(noWait), TimeSpan.FromSeconds(result.GetValue(timeout)), result.GetValue(json), cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(bool noWait, TimeSpan timeout, bool asJson, CancellationToken cancellationToken)
    {
        var commandId = await PlacementJobTrigger.SendAsync(CliEnvironment.OpsRabbitMqUri, $"cli@{Environment.MachineName}", cancellationToken).ConfigureAwait(false);
        if (noWait)
        {
            Console.WriteLine($"run-now {commandId} sent");
            return ExitCodes.Ok;
        }

        var decision = await PlacementJobTrigger.WaitForDecisionAsync(CliEnvironment.PostgresUrl, commandId, timeout, null, cancellationToken).ConfigureAwait(false);
        Console.WriteLine(asJson ? JsonSerializer.Serialize(StatusFormat.DecisionJson(decision), StatusFormat.Json) : StatusFormat.DecisionLine(decision));
        return ExitCodes.Ok;
    }
}
