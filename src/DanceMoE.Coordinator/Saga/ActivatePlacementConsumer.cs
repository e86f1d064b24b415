using DanceMoE.Contracts;
using DanceMoE.Hosting;
using MassTransit;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DanceMoE.Coordinator.Saga;

/// <summary>
/// Activates a placement for a migration saga: registers it (once per migration and stage, so a redelivery reuses it),
/// checks the invariants, activates it and answers once every live edge routes by it.
/// </summary>
public sealed class ActivatePlacementConsumer(
    PlacementRegistry registry,
    PlacementAcknowledgements acknowledgements,
    ClusterMembership membership,
    IOptions<PlacementJobOptions> job,
    IOptions<MigrationOptions> options,
    TimeProvider time,
    ILogger<ActivatePlacementConsumer> logger) : IConsumer<ActivatePlacement>
{
    public async Task Consume(ConsumeContext<ActivatePlacement> context)
    {
        var command = context.Message;
        var version = command.Version;
        if (version == 0)
        {
            var digest = $"migration:{command.MigrationId:N}:{command.Stage}";
            version = await registry.FindByDigestAsync(digest, context.CancellationToken).ConfigureAwait(false)
                ?? await registry.AddAsync("migration", 0, digest, command.Assignments, context.CancellationToken).ConfigureAwait(false);
        }

        var placement = await registry.GetAsync(version, context.CancellationToken).ConfigureAwait(false)
            ?? throw new InvalidOperationException($"placement version {version} does not exist");
        // Warm-up and the acknowledgements share the time the saga gives this stage, so this consumer never works on
        // after the saga has compensated.
        var budget = TimeSpan.FromSeconds(options.Value.ActivationTimeoutSeconds * 0.8);
        var startedAt = time.GetUtcNow();
        if (!await membership.WaitUntilWarmAsync(budget / 2, context.CancellationToken).ConfigureAwait(false))
        {
            var unheard = membership.NotHeardYet();
            logger.LogWarning(
                "migration {Migration}: warm-up cut at {Seconds:0.#} s; not heard since the restart: {Edges}", command.MigrationId, (budget / 2).TotalSeconds,
                unheard.Count > 0 ? string.Join(", ", unheard) : "no edge the database knew (an edge it never knew may not have beaten yet)");
        }

        var edges = membership.Alive(time.GetUtcNow());
        var violations = PlacementInvariants.Check(placement.Assignments, job.Value, edges);
        if (violations.Count > 0)
        {
            throw new InvalidOperationException($"placement v{version} breaks the invariants: {string.Join("; ", violations)}");
        }

        if (!placement.IsActive)
        {
            await registry.ActivateAsync(version, context.CancellationToken, SendConfirmDeadline.For(context)).ConfigureAwait(false);
        }
        else
        {
            await registry.RepublishAsync(version, context.CancellationToken, SendConfirmDeadline.For(context)).ConfigureAwait(false);
        }

        var wanted = edges.Select(e => e.EdgeId).ToList();
        // What warm-up and a slow database left of the budget; none left still takes the acknowledgements already in.
        var left = budget - (time.GetUtcNow() - startedAt);
        if (!await acknowledgements.WaitForAsync(version, wanted, left > TimeSpan.Zero ? left : TimeSpan.Zero, context.CancellationToken).ConfigureAwait(false))
        {
            var missing = wanted.Except(acknowledgements.AppliedBy(version), StringComparer.Ordinal);
            throw new TimeoutException($"{string.Join(", ", missing)} did not acknowledge placement v{version} within {budget.TotalSeconds:0.#} s of this stage");
        }

        logger.LogInformation("migration {Migration}: v{Version} active on {Edges}", command.MigrationId, version, string.Join(", ", wanted));
        // The answer goes to the saga's quorum queue: past the deadline it is given up (the send goes on until the connection fails it).
        var deadline = SendConfirmDeadline.For(context);
        await SendConfirmDeadline.Confirmed(
            context.RespondAsync(new PlacementSwitched { MigrationId = command.MigrationId, Stage = command.Stage, Version = version }).WaitAsync(deadline),
            $"the answer that placement v{version} is active", deadline).ConfigureAwait(false);
    }
}

public sealed class ActivatePlacementConsumerDefinition : ConsumerDefinition<ActivatePlacementConsumer>
{
    public const string Queue = "coordinator-activations";

    public static readonly Uri Address = ReplicatedQueues.SendAddress(Queue);

    public ActivatePlacementConsumerDefinition()
    {
        EndpointName = Queue;
        ConcurrentMessageLimit = 1;
    }

    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpointConfigurator,
        IConsumerConfigurator<ActivatePlacementConsumer> consumerConfigurator, IRegistrationContext context)
    {
        endpointConfigurator.UseQuorumQueue();
        endpointConfigurator.UseSendConfirmDeadline();
    }
}
