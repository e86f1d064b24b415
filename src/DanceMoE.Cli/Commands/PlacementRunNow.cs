using System.Globalization;
using System.Text.Json;
using DanceMoE.Contracts;
using DanceMoE.Coordinator;
using DanceMoE.Data;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace DanceMoE.Cli.Commands;

/// <summary>
/// <c>dancemoe placement run-now</c>: sends <see cref="RunPlacementNow"/> to the coordinator's queue and, unless told not
/// to, waits for the decision that run records. The coordinator's job never runs twice at once: a run-now during a run
/// goes after it.
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

        var consumers = await BusClient.ConsumersOfAsync(CliEnvironment.RabbitMqUri, RunPlacementNowConsumerDefinition.Queue, cancellationToken).ConfigureAwait(false);
        if (consumers is null or 0)
        {
            throw new CliException($"no coordinator serves queue '{RunPlacementNowConsumerDefinition.Queue}': start one with ./dancemoe coordinator", ExitCodes.Unavailable);
        }

        Guid commandId;
        await using (var client = await BusClient.StartAsync(CliEnvironment.RabbitMqUri, cancellationToken).ConfigureAwait(false))
        {
            commandId = await SendAsync(client.Bus, $"cli@{Environment.MachineName}", cancellationToken).ConfigureAwait(false);
        }

        if (noWait)
        {
            Console.WriteLine($"run-now {commandId} sent");
            return ExitCodes.Ok;
        }

        var decision = await WaitForDecisionAsync(CliEnvironment.PostgresUrl, commandId, timeout, null, cancellationToken).ConfigureAwait(false);
        if (asJson)
        {
            Console.WriteLine(JsonSerializer.Serialize(StatusCommand.DecisionJson(decision), StatusCommand.Json));
        }
        else
        {
            Console.WriteLine(StatusCommand.DecisionLine(decision));
        }

        return ExitCodes.Ok;
    }

    /// <summary>Sends <see cref="RunPlacementNow"/> to the coordinator's queue; returns its command id.</summary>
    internal static async Task<Guid> SendAsync(IBus bus, string requestedBy, CancellationToken cancellationToken)
    {
        var command = new RunPlacementNow { CommandId = NewId.NextGuid(), RequestedBy = requestedBy, RequestedAt = DateTimeOffset.UtcNow };
        var endpoint = await bus.GetSendEndpoint(new Uri($"queue:{RunPlacementNowConsumerDefinition.Queue}")).ConfigureAwait(false);
        await endpoint.Send(command, cancellationToken).ConfigureAwait(false);
        return command.CommandId;
    }

    /// <summary>
    /// Waits for the decision the run of <paramref name="commandId"/> records in <paramref name="postgresUrl"/>;
    /// <paramref name="check"/>, when given, runs between polls (to fail early when the coordinator died).
    /// </summary>
    internal static async Task<PlacementDecision> WaitForDecisionAsync(
        string postgresUrl, Guid commandId, TimeSpan timeout, Action? check, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + timeout;
        try
        {
            while (true)
            {
                check?.Invoke();
                await using (var db = DanceMoEDbContext.Create(postgresUrl))
                {
                    var decision = await db.PlacementDecisions.AsNoTracking().SingleOrDefaultAsync(d => d.CommandId == commandId, cancellationToken).ConfigureAwait(false);
                    if (decision is not null)
                    {
                        return decision;
                    }
                }

                if (DateTime.UtcNow > deadline)
                {
                    throw new CliException(
                        string.Create(CultureInfo.InvariantCulture, $"no decision for run {commandId} within {timeout.TotalSeconds:F0} s (the coordinator may still be running it: ./dancemoe status)"));
                }

                await Task.Delay(250, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (NpgsqlException ex)
        {
            throw new CliException($"cannot read placement_decisions at {DbCommand.Redact(postgresUrl)}: {ex.Message}", ExitCodes.Unavailable, ex);
        }
    }
}
