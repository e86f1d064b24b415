using DanceMoE.Coordinator;
using DanceMoE.Hosting;
using DanceMoE.Lab.Demo;
using RabbitMQ.Client;

namespace DanceMoE.EndToEndTests;

/// <summary>The demo's run-now reaches the coordinator with the local services' users, each with its role's permissions.</summary>
public sealed class DemoRunNowTests
{
    [Fact]
    public async Task The_user_the_demo_sends_run_now_as_may_declare_the_coordinators_exchange_as_MassTransit_does_before_it_sends()
    {
        var broker = RabbitMqOptions.Parse(ClosedLoopDemo.RunNowRabbitMqUri);
        await using var connection = await broker.ConnectionFactory().CreateConnectionAsync(broker.Endpoints());
        await using var channel = await connection.CreateChannelAsync();

        // Refused to the client's user, this declaration closed MassTransit's channel and its send was tried again until
        // the demo gave up: never, so the demo hung at "running the placement job now...".
        await channel.ExchangeDeclareAsync(RunPlacementNowConsumerDefinition.Queue, ExchangeType.Fanout, durable: true);
    }
}
