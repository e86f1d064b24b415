namespace DanceMoE.Placement;

/// <summary>
/// One request served by <paramref name="Server"/>: <paramref name="Experts"/>[layer] lists the top-k experts of
/// every token, token after token (Tokens x k ids).
/// </summary>
public sealed record TraceRequest(int Server, int Tokens, int[][] Experts);

/// <summary>A set of requests, e.g. the history a placement is computed from or the future it is judged on.</summary>
public sealed record Workload(IReadOnlyList<TraceRequest> Requests)
{
    public long Tokens => Requests.Sum(r => (long)r.Tokens);

    /// <summary>Splits each server's requests in order: the first half is history, the rest evaluation.</summary>
    public static (Workload History, Workload Eval) SplitHalves(IEnumerable<TraceRequest> requests)
    {
        var history = new List<TraceRequest>();
        var eval = new List<TraceRequest>();
        foreach (var group in requests.GroupBy(r => r.Server))
        {
            var list = group.ToList();
            var half = list.Count / 2;
            history.AddRange(list.Take(half));
            eval.AddRange(list.Skip(half));
        }

        return (new Workload(history), new Workload(eval));
    }
}
