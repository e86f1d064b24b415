namespace DanceMoE.Placement.Tests;

public class LatencyModelTests
{
    // Hidden state 1000 B each way at 1 MB/s: 2 ms of transfer per token; RTT 2 ms; an expert (1 MB at 1 GB/s) 1 ms.
    private static readonly MoeModel Model = MoeModel.Uniform(1, 4, 2, 1_000_000, 1000);

    private static readonly Cluster Pair = Cluster.FullMesh(
        [new ServerSpec("a", 10_000_000, 1e15, 1e9), new ServerSpec("b", 10_000_000, 1e15, 1e9)],
        new LinkSpec(1e6, 0.002));

    private static readonly LatencyOptions Options = new() { DecodeTokens = 1, RequestIntervalSeconds = 1e12 };

    private static ExpertPlacement Split()
    {
        var placement = new ExpertPlacement(2, 1, 4);
        placement.Add(0, 0, 0);
        placement.Add(0, 0, 1);
        placement.Add(1, 0, 2);
        placement.Add(1, 0, 3);
        return placement;
    }

    [Fact]
    public void A_decode_step_with_all_experts_local_costs_only_local_compute()
    {
        var workload = new Workload([new TraceRequest(0, 2, [[0, 1, 0, 1]])]);
        var metrics = new LatencyModel(Model, Pair, Options).Evaluate(Split(), workload);
        Assert.Equal(2.0, metrics.DecodeMsPerToken, 6);
        Assert.Equal(4.0, metrics.LatencyMsMean, 6);
        Assert.Equal(1.0, metrics.LocalRatio, 6);
        Assert.Equal(0.0, metrics.BytesPerToken, 6);
        Assert.Equal(0.0, metrics.DecodeRoundTripRatio, 6);
    }

    [Fact]
    public void One_remote_expert_makes_the_whole_step_pay_a_round_trip()
    {
        // Decode token: expert 0 local (1 ms) and expert 2 remote: 2 ms RTT + 2 ms transfer + 1 ms compute = 5 ms.
        var workload = new Workload([new TraceRequest(0, 2, [[0, 1, 0, 2]])]);
        var metrics = new LatencyModel(Model, Pair, Options).Evaluate(Split(), workload);
        Assert.Equal(5.0, metrics.DecodeMsPerToken, 4);
        Assert.Equal(2.0 + 5.0, metrics.LatencyMsMean, 4);
        Assert.Equal(0.75, metrics.LocalRatio, 6);
        Assert.Equal(0.5, metrics.RemoteCallsPerToken, 6);
        Assert.Equal(1.0, metrics.DecodeRoundTripRatio, 6);
        Assert.Equal(1000.0, metrics.BytesPerToken, 6);
    }

    [Fact]
    public void Prefill_pays_for_every_token_sent_in_one_batch()
    {
        // Prompt of 3 tokens all needing expert 3 on b: RTT 2 ms + 3 x 2 ms transfer + 1 ms compute (memory bound) = 9 ms.
        var workload = new Workload([new TraceRequest(0, 4, [[0, 3, 1, 3, 0, 3, 0, 1]])]);
        var metrics = new LatencyModel(Model, Pair, Options).Evaluate(Split(), workload);
        Assert.Equal(9.0 + 2.0, metrics.LatencyMsMean, 4);
    }

    [Fact]
    public void Remote_experts_go_to_as_few_servers_as_possible()
    {
        var three = Cluster.FullMesh(
            [new ServerSpec("a", 10_000_000, 1e15, 1e9), new ServerSpec("b", 10_000_000, 1e15, 1e9), new ServerSpec("c", 10_000_000, 1e15, 1e9)],
            new LinkSpec(1e6, 0.002));
        var placement = new ExpertPlacement(3, 1, 4);
        placement.Add(0, 0, 0);
        placement.Add(1, 0, 1);
        placement.Add(1, 0, 2);
        placement.Add(2, 0, 2);
        placement.Add(2, 0, 3);
        var workload = new Workload([new TraceRequest(0, 2, [[1, 2, 1, 2]])]);
        var metrics = new LatencyModel(Model, three, Options).Evaluate(placement, workload);
        Assert.Equal(2000.0, metrics.BytesPerToken, 6);
        Assert.Equal(2 + 2 + 2.0, metrics.DecodeMsPerToken, 4);
    }

    [Fact]
    public void Requests_shorter_than_the_decode_window_keep_one_prompt_token()
    {
        var options = new LatencyOptions { DecodeTokens = 64 };
        Assert.Equal((1, 9), options.Split(10));
        Assert.Equal((36, 64), options.Split(100));
    }
}
