using MassTransit;

namespace DanceMoE.Hosting;

/// <summary>
/// Requests, control commands and migration steps live in quorum queues: replicated on every node of a RabbitMQ cluster,
/// so a node lost keeps what it had accepted (a single broker holds the one replica). Expert batches stay transient, in
/// transient queues: a node lost takes its queues with it, their consumers declare them again on the node they reconnect
/// to (a durable classic queue would refuse every declaration until its node came back), and a batch lost is retried on
/// another replica within the request's deadline.
/// </summary>
public static class ReplicatedQueues
{
    public static void UseQuorumQueue(this IReceiveEndpointConfigurator endpoint)
    {
        if (endpoint is IRabbitMqReceiveEndpointConfigurator rabbit)
        {
            rabbit.SetQuorumQueue();
        }
    }

    /// <summary>
    /// Where a sender sends to a quorum queue: its exchange, which the consumer binds to the queue. A <c>queue:</c> address
    /// would declare the queue as a classic one, and the broker refuses that for a quorum queue (PRECONDITION_FAILED).
    /// </summary>
    public static Uri SendAddress(string queue) => new($"exchange:{queue}");

    /// <summary>A transient queue: neither durable nor kept once its consumer leaves.</summary>
    public static void UseTransientQueue(this IReceiveEndpointConfigurator endpoint)
    {
        if (endpoint is IRabbitMqReceiveEndpointConfigurator rabbit)
        {
            rabbit.Durable = false;
            rabbit.AutoDelete = true;
        }
    }

    /// <summary>
    /// Where a sender sends to a transient queue: its exchange, transient as well. A sender never declares the queue (it
    /// would declare it exclusive to itself); while no consumer has bound it, a message goes nowhere and its request times out.
    /// </summary>
    public static Uri TransientAddress(string queue) => new($"exchange:{queue}?temporary=true");
}
