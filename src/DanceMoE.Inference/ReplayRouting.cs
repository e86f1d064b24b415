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

    /// <summary>The replay trace of <paramref name="path"/>, every request checked to be a routing of <paramref name="experts"/> experts: one line naming the file otherwise.</summary>
    public static ReplayTrace Load(string path, int experts)
    {
        ReplayTrace? trace;
        try
        {
            using var stream = new FileStream(ModelFiles.Open(path), FileAccess.Read);
            trace = JsonSerializer.Deserialize<ReplayTrace>(stream, Json);
        }
        catch (FileNotFoundException ex)
        {
            throw new ModelFormatException($"{path}: replay trace not found", ex);
        }
        catch (JsonException ex)
        {
            throw new ModelFormatException($"{path}: not a replay trace ({ex.Message})", ex);
        }
        catch (IOException ex)
        {
            throw new ModelFormatException($"{path}: cannot read the replay trace ({ex.Message})", ex);
        }

        if (trace?.Requests is null)
        {
            throw new ModelFormatException($"{path}: no \"requests\" list");
        }

        if (trace.TopK < 1)
        {
            throw new ModelFormatException($"{path}: top_k {trace.TopK} is not a positive number of experts per token");
        }

        var ids = new HashSet<int>();
        foreach (var request in trace.Requests)
        {
            if (request?.Experts is not { Length: > 0 } layers || layers.Any(l => l is null))
            {
                throw new ModelFormatException($"{path}: a request has no \"experts\" of every layer");
            }

            if (!ids.Add(request.Id))
            {
                throw new ModelFormatException($"{path}: request {request.Id} is listed twice");
            }

            if (layers.Any(l => l.Length == 0 || l.Length % trace.TopK != 0 || l.Length != layers[0].Length))
            {
                throw new ModelFormatException($"{path}: request {request.Id} needs the same positional length, a multiple of top-{trace.TopK}, in every layer");
            }

            if (layers.SelectMany(l => l).Any(e => e < 0 || e >= experts))
            {
                throw new ModelFormatException($"{path}: request {request.Id} names an expert outside the model's {experts}");
            }
        }

        return trace;
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
