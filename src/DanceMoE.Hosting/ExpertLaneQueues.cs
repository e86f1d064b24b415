namespace DanceMoE.Hosting;

/// <summary>
/// The names of the expert-batch lane: edges send each other expert batches and their answers on RabbitMQ's client
/// directly (no MassTransit envelope), through one durable direct exchange, <c>expert-lane</c>. Edge <c>edge-1</c>
/// consumes <c>expert-lane.edge-1</c> (peers' batches) and <c>expert-lane.edge-1.replies</c> (answers to its own), each
/// bound under its own name. Only the edge role may configure, write and read them (scripts/rabbitmq-users.sh).
/// </summary>
public static class ExpertLaneQueues
{
    public const string Exchange = "expert-lane";

    public static string Batches(string edgeId) => Exchange + "." + EdgeQueues.Requests(edgeId);

    public static string Replies(string edgeId) => Batches(edgeId) + ".replies";
}
