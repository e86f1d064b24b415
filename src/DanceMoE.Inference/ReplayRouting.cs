using System.Text.Json;
using DanceMoE.Model;

namespace DanceMoE.Inference;

/// <summary>
/// The recorded routing of one request (<c>bench replay</c>): the top-k experts of every (layer, position), used instead
/// of the router's choice. Gate weights are uniform (1/k): replay reproduces where experts run, not what they compute.
/// </summary>
public sealed class ReplayRouting
{
    private readonly int[][] _experts;

    /// <param name="topK">Experts per token.</param>
    /// <param name="experts">Per layer, the experts of every position, position after position (positions x k ids).</param>
    public ReplayRouting(int topK, int[][] experts)
    {
        ArgumentNullException.ThrowIfNull(experts);
        ArgumentOutOfRangeException.ThrowIfLessThan(topK, 1);
        if (experts.Length == 0 || experts.Any(l => l.Length == 0 || l.Length % topK != 0 || l.Length != experts[0].Length))
        {
            throw new ArgumentException($"a replayed routing needs the same positional length, a multiple of top-{topK}, in every layer", nameof(experts));
        }

        TopK = topK;
        _experts = experts;
    }

    public int TopK { get; }

    public int Layers => _experts.Length;

    public int Positions => _experts[0].Length / TopK;

    /// <summary>The recorded experts of <paramref name="position"/> in <paramref name="layer"/>, each with weight 1/k.</summary>
    public ExpertChoice[] At(int layer, int position)
    {
        if (layer < 0 || layer >= Layers || position < 0 || position >= Positions)
        {
            throw new ArgumentOutOfRangeException(nameof(position), $"the replayed routing has {Layers} layers x {Positions} positions; asked for layer {layer}, position {position}");
        }

        var choices = new ExpertChoice[TopK];
        for (var i = 0; i < TopK; i++)
        {
            choices[i] = new ExpertChoice(_experts[layer][(position * TopK) + i], 1f / TopK);
        }

        return choices;
    }
}

/// <summary>One recorded request of a replay file: its id (the one a replay request names), tokens and routing.</summary>
public sealed record ReplayTraceRequest(int Id, int Tokens, int[][] Experts);

/// <summary>
/// The requests an edge may replay, written by <c>bench replay</c> from the recorded traces and read by an edge started
/// with <c>--replay-trace</c>: only such an edge honours a request's replay id.
/// </summary>
public sealed record ReplayTrace(int TopK, IReadOnlyList<ReplayTraceRequest> Requests)
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public static ReplayTrace Load(string path)
    {
        using var stream = File.OpenRead(path);
        return JsonSerializer.Deserialize<ReplayTrace>(stream, Json) ?? throw new InvalidDataException($"{path}: empty replay trace");
    }

    public void Save(string path)
    {
        using var stream = File.Create(path);
        JsonSerializer.Serialize(stream, this, Json);
    }

    /// <summary>The routing of request <paramref name="id"/>; null when the file has no such request.</summary>
    public ReplayRouting? Routing(int id) =>
        Requests.FirstOrDefault(r => r.Id == id) is { } request ? new ReplayRouting(TopK, request.Experts) : null;
}
