namespace DanceMoE.Hosting;

/// <summary>
/// The three queues of an edge, shared by the edge that consumes them and everyone who sends to them. An edge with id
/// <c>edge-1</c> (or just <c>1</c>) consumes <c>edge-1</c> (text generation), <c>edge-1-experts</c> (expert batches from
/// peers) and <c>edge-1-control</c> (loads, unloads, placements).
/// </summary>
public static class EdgeQueues
{
    public static string Requests(string edgeId) =>
        edgeId.StartsWith("edge-", StringComparison.Ordinal) ? edgeId : "edge-" + edgeId;

    public static string Experts(string edgeId) => Requests(edgeId) + "-experts";

    public static string Control(string edgeId) => Requests(edgeId) + "-control";

    public static Uri RequestsAddress(string edgeId) => new($"queue:{Requests(edgeId)}");

    public static Uri ExpertsAddress(string edgeId) => new($"queue:{Experts(edgeId)}");

    public static Uri ControlAddress(string edgeId) => new($"queue:{Control(edgeId)}");
}
