using DanceMoE.Hosting;

namespace DanceMoE.Edge;

/// <summary>The three queues of an edge (names from <see cref="EdgeQueueNames"/>) and their send addresses.</summary>
public static class EdgeQueues
{
    public static string Requests(string edgeId) => EdgeQueueNames.Requests(edgeId);

    public static string Experts(string edgeId) => EdgeQueueNames.Experts(edgeId);

    public static string Control(string edgeId) => EdgeQueueNames.Control(edgeId);

    public static Uri RequestsAddress(string edgeId) => new($"queue:{Requests(edgeId)}");

    public static Uri ExpertsAddress(string edgeId) => new($"queue:{Experts(edgeId)}");

    public static Uri ControlAddress(string edgeId) => EdgeQueueNames.ControlAddress(edgeId);
}
