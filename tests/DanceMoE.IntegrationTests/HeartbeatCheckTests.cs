using DanceMoE.Contracts;
using DanceMoE.Coordinator;

namespace DanceMoE.IntegrationTests;

public sealed class HeartbeatCheckTests
{
    private static readonly DateTimeOffset Now = new(2026, 12, 4, 2, 0, 0, TimeSpan.Zero);

    private static readonly EdgeHeartbeat Good = new()
    {
        EdgeId = "edge-1",
        MemoryBudgetBytes = 1 << 30,
        MemoryUsedBytes = 1 << 20,
        LoadedExperts = ["0:1", "3:15"],
        ExpertMilliseconds = 0.2,
        ExecutionProvider = "cuda",
        ComputeClass = "H200",
        SentAt = Now.AddSeconds(59),
    };

    [Fact]
    public void A_heartbeat_an_edge_sends_has_no_problem_even_a_day_old()
    {
        Assert.Null(HeartbeatCheck.Problem(Good, Now));
        Assert.Null(HeartbeatCheck.Problem(Good with { SentAt = Now.AddDays(-1) }, Now));
    }

    public static TheoryData<EdgeHeartbeat, string> Bad => new()
    {
        { Good with { EdgeId = "Edge 1" }, "edge id 'Edge 1' is not an edge id" },
        { Good with { EdgeId = null! }, "edge id" },
        { Good with { MemoryBudgetBytes = -1 }, "memory budget -1 is negative" },
        { Good with { MemoryUsedBytes = -5 }, "memory used -5 is negative" },
        { Good with { QueueDepth = -1 }, "queue depth -1 is negative" },
        { Good with { PlacementVersion = -2 }, "placement version -2 is negative" },
        { Good with { TraceRowsSpilled = -1 }, "a trace row count is negative" },
        { Good with { ExpertMilliseconds = double.NaN }, "expert time NaN ms is not a time" },
        { Good with { TraceLagMs = double.PositiveInfinity }, "trace lag" },
        { Good with { HeartbeatSeconds = double.NaN }, "heartbeat interval NaN s is not 0 to 3600" },
        { Good with { HeartbeatSeconds = -1 }, "heartbeat interval -1 s is not 0 to 3600" },
        { Good with { HeartbeatSeconds = 1e9 }, "heartbeat interval 1000000000 s is not 0 to 3600" },
        { Good with { ExecutionProvider = "CUDAExecutionProvider" }, "execution provider is not 1 to 16 lowercase letters and digits" },
        { Good with { ComputeClass = new string('x', 129) }, "compute class of 129 characters (at most 128)" },
        { Good with { ComputeClass = "H200\0" }, "compute class has a control character (one line of text)" },
        { Good with { ComputeClass = "H200\nedge-9   live" }, "compute class has a control character (one line of text)" },
        { Good with { LoadedExperts = null! }, "loaded experts missing" },
        { Good with { LoadedExperts = ["0:1", "0;2"] }, "loaded expert '0;2' is not a layer:expert key" },
        { Good with { LoadedExperts = ["0:1", null!] }, "loaded expert '' is not a layer:expert key" },
        { Good with { SentAt = Now.AddMinutes(1).AddSeconds(1) }, "more than 1 minute ahead of the coordinator's clock" },
    };

    [Theory]
    [MemberData(nameof(Bad))]
    public void A_malformed_or_future_dated_heartbeat_is_refused_with_what_is_wrong(EdgeHeartbeat beat, string expected)
    {
        var problem = HeartbeatCheck.Problem(beat, Now);

        Assert.NotNull(problem);
        Assert.Contains(expected, problem, StringComparison.Ordinal);
    }

    [Fact]
    public void A_list_of_loaded_experts_longer_than_any_model_is_refused()
    {
        var many = Enumerable.Range(0, HeartbeatCheck.MaxLoadedExperts + 1).Select(i => $"{i / 1000}:{i % 1000}").ToList();

        Assert.Equal($"loaded experts missing or over {HeartbeatCheck.MaxLoadedExperts}", HeartbeatCheck.Problem(Good with { LoadedExperts = many }, Now));
    }
}
