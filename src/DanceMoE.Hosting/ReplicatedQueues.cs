using MassTransit;

namespace DanceMoE.Hosting;

/// <summary>
/// Requests, control commands and migration steps live in quorum queues: replicated on every node of a RabbitMQ cluster,
/// so a node lost keeps what it had accepted (a single broker holds the one replica). Expert batches stay in classic
/// queues, sent transient: a lost batch is retried on another replica within the request's deadline.
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
}
