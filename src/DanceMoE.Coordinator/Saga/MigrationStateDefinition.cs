using DanceMoE.Data;
using DanceMoE.Hosting;
using MassTransit;

namespace DanceMoE.Coordinator.Saga;

/// <summary>
/// The saga's endpoint: one message at a time (one migration runs at once, and its steps are sequential), a retry that
/// re-runs a message from a fresh load of the row, and an outbox so a retried message sends its commands once.
/// </summary>
public sealed class MigrationStateDefinition : SagaDefinition<MigrationState>
{
    public const string Queue = "coordinator-migrations";

    public MigrationStateDefinition()
    {
        EndpointName = Queue;
        ConcurrentMessageLimit = 1;
    }

    protected override void ConfigureSaga(IReceiveEndpointConfigurator endpointConfigurator, ISagaConfigurator<MigrationState> sagaConfigurator, IRegistrationContext context)
    {
        endpointConfigurator.UseQuorumQueue();
        endpointConfigurator.UseMessageRetry(r => r.Intervals(100, 500, 1000, 2000, 5000));
        // Outside the outbox, which sends the step's commands once the row is saved: a send the broker does not confirm in
        // time fails the message (retried, then faulted) and the step's deadline sends it again; the saga never hangs on it.
        endpointConfigurator.UseSendConfirmDeadline();
        endpointConfigurator.UseInMemoryOutbox(context);
    }
}
