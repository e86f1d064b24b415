using System.Globalization;
using DanceMoE.Contracts;
using DanceMoE.Coordinator;
using DanceMoE.Data;
using DanceMoE.Hosting;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace DanceMoE.Operations;

/// <summary>
/// Runs the coordinator's placement job now: sends <see cref="RunPlacementNow"/> to the coordinator's queue and waits for
/// the decision that run records. The job never runs twice at once: a run-now during a run goes after it.
/// </summary>
public static class PlacementJobTrigger
{
    /// <summary>Fails as <see cref="OperationFailure.Unavailable"/> when no coordinator consumes the run-now queue.</summary>
    public static async Task RequireCoordinatorAsync(string rabbitMqUri, CancellationToken cancellationToken)
    {
        var consumers = await BusClient.ConsumersOfAsync(rabbitMqUri, RunPlacementNowConsumerDefinition.Queue, cancellationToken).ConfigureAwait(false);
        if (consumers is null or 0)
        {
            throw new OperationException(
                $"no coordinator serves queue '{RunPlacementNowConsumerDefinition.Queue}': start one with ./dancemoe coordinator", OperationFailure.Unavailable);
        }
    }

    /// <summary>Checks for a coordinator, sends run-now on a bus of its own; returns the command id.</summary>
    public static async Task<Guid> SendAsync(string rabbitMqUri, string requestedBy, CancellationToken cancellationToken)
    {
        await RequireCoordinatorAsync(rabbitMqUri, cancellationToken).ConfigureAwait(false);
        await using var client = await BusClient.StartAsync(rabbitMqUri, cancellationToken).ConfigureAwait(false);
        return await SendAsync(client.Requests, requestedBy, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Sends <see cref="RunPlacementNow"/> to the coordinator's (quorum) queue through <paramref name="channel"/>, which a
    /// broker's rejection after a node's death does not wedge; returns its command id.
    /// </summary>
    public static async Task<Guid> SendAsync(RequestChannel channel, string requestedBy, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(channel);
        var command = new RunPlacementNow { CommandId = NewId.NextGuid(), RequestedBy = requestedBy, RequestedAt = DateTimeOffset.UtcNow };
        try
        {
            await channel.SendAsync(ReplicatedQueues.SendAddress(RunPlacementNowConsumerDefinition.Queue), command, cancellationToken).ConfigureAwait(false);
        }
        catch (SendRefusedException ex)
        {
            throw new OperationException($"cannot send run-now to the coordinator: {ex.Message} (send as the ops user: check {LocalEnvironment.RabbitMqSettingsOf(BusRole.Ops)})", OperationFailure.InvalidSettings, ex);
        }

        return command.CommandId;
    }

    /// <summary>
    /// Waits for the decision the run of <paramref name="commandId"/> records in <paramref name="postgresUrl"/>;
    /// <paramref name="check"/>, when given, runs between polls (to fail early when the coordinator died).
    /// </summary>
    public static async Task<PlacementDecision> WaitForDecisionAsync(
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
                    throw new OperationException(
                        string.Create(CultureInfo.InvariantCulture, $"no decision for run {commandId} within {timeout.TotalSeconds:F0} s (the coordinator may still be running it: ./dancemoe status)"));
                }

                await Task.Delay(250, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (NpgsqlException ex)
        {
            throw new OperationException($"cannot read placement_decisions at {LocalEnvironment.Redact(postgresUrl)}: {ex.Message}", OperationFailure.Unavailable, ex);
        }
    }
}
