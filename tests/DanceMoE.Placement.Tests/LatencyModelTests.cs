namespace DanceMoE.Placement.Tests;

public class LatencyModelTests
{
    // A hidden-state row of 1000 B at 1 MB/s: 1 ms; a (token, peer) sends its row and gets one back per expert there.
    // RTT 2 ms; an expert (1 MB at 1 GB/s) 1 ms.
    private static readonly MoeModel Model = MoeModel.Uniform(1, 4, 2, 1_000_000, 1000);

    private static readonly Cluster Pair = Cluster.FullMesh(
        [new ServerSpec("a", 10_000_000, 1e15, 1e9), new ServerSpec("b", 10_000_000, 1e15, 1e9)],
        new LinkSpec(1e6, 0.002));

    private static readonly LatencyOptions Options = new() { DecodeTokens = 1, RequestIntervalSeconds = 1e12, MessageSeconds = 0 };

    /// <summary>Three servers: expert 0 on a, expert 1 only on b, expert 2 on b and c, expert 3 on c.</summary>
    private static (Cluster Cluster, ExpertPlacement Placement) ThreeWithExpert2OnBAndC()
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
        return (three, placement);
    }

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
        // Decode token: expert 0 local (1 ms) and expert 2 remote: 2 ms RTT + 2 rows (in, out) + 1 ms compute = 5 ms.
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
        // Prompt of 3 tokens all needing expert 3 on b: one message, RTT 2 ms + 3 x 2 rows + 1 ms compute (memory bound) = 9 ms.
        var workload = new Workload([new TraceRequest(0, 4, [[0, 3, 1, 3, 0, 3, 0, 1]])]);
        var metrics = new LatencyModel(Model, Pair, Options).Evaluate(Split(), workload);
        Assert.Equal(9.0 + 2.0, metrics.LatencyMsMean, 4);
    }

    [Fact]
    public void A_peers_rows_are_its_tokens_once_and_one_sum_per_token_whose_experts_are_all_there_sharing_its_link()
    {
        // Prompt of 2 tokens, both needing experts 2 and 3, both on b: 2 tokens in, 2 sums back (not 4 answers), on one
        // link: 2 + 4 + 2 ms.
        var workload = new Workload([new TraceRequest(0, 3, [[2, 3, 2, 3, 0, 1]])]);
        var metrics = new LatencyModel(Model, Pair, Options).Evaluate(Split(), workload);
        Assert.Equal(8.0 + 2.0, metrics.LatencyMsMean, 4);
        Assert.Equal(4 * 1000.0 / 3, metrics.BytesPerToken, 6);
    }

    [Fact]
    public void Remote_experts_go_where_the_slowest_peer_answers_first_as_the_edges_choose()
    {
        // Expert 1 only on b; expert 2 on b and c: c answers sooner (one row less on its link), so the step uses both.
        var (three, placement) = ThreeWithExpert2OnBAndC();
        var workload = new Workload([new TraceRequest(0, 2, [[1, 2, 1, 2]])]);
        var model = new LatencyModel(Model, three, Options);
        var metrics = model.Evaluate(placement, workload);
        Assert.Equal(4000.0, metrics.BytesPerToken, 6);
        Assert.Equal(2 + 2 + 1.0, metrics.DecodeMsPerToken, 4);
        Assert.All(model.Messages(placement, workload.Requests[0]), step => Assert.Equal([0, 2, 2], step.RowsTo));
    }

    [Theory]
    [InlineData(1, 0.0, 2.0)]
    [InlineData(2, 0.0, 1.0)]
    [InlineData(4, 0.0, 1.0)]
    [InlineData(1, 1.0, 6.0)]
    [InlineData(2, 1.0, 3.0)]
    public void Every_message_of_a_step_adds_the_bus_work_shared_by_its_lanes(int lanes, double busMsPerRow, double busMs)
    {
        // As above: one decode step sends a message of 2 rows to b and one to c (5 ms); each message costs the bus 1 ms
        // and its rows busMsPerRow each; a step pays the larger of its largest message's and all its messages' over the lanes.
        var (three, placement) = ThreeWithExpert2OnBAndC();
        var workload = new Workload([new TraceRequest(0, 2, [[1, 2, 1, 2]])]);
        var metrics = new LatencyModel(Model, three, Options with { MessageSeconds = 0.001, MessageByteSeconds = busMsPerRow / 1e6, MessageLanes = lanes }).Evaluate(placement, workload);
        Assert.Equal(2 + 2 + 1.0 + busMs, metrics.DecodeMsPerToken, 4);
    }

    [Theory]
    [InlineData(1, 0.0, 6.0)]
    [InlineData(2, 1.0, 8.0)]
    [InlineData(1, 4.0, 18.0)]
    public void On_one_shared_host_a_message_pays_its_bus_work_after_its_own_link_and_the_steps_work_shares_the_lanes(int lanes, double busMsPerRow, double stepMs)
    {
        // As above: two messages of 2 rows whose paths take 5 ms each, each costing the bus 1 ms and busMsPerRow per row;
        // the step ends at the later of its slowest path with its message's work and all the work over the lanes.
        var (three, placement) = ThreeWithExpert2OnBAndC();
        var workload = new Workload([new TraceRequest(0, 2, [[1, 2, 1, 2]])]);
        var options = Options with { MessageSeconds = 0.001, MessageByteSeconds = busMsPerRow / 1e6, MessageLanes = lanes, SharedHostBus = true };
        var metrics = new LatencyModel(Model, three, options).Evaluate(placement, workload);
        Assert.Equal(stepMs, metrics.DecodeMsPerToken, 4);
    }

    [Fact]
    public void A_messages_bus_work_per_byte_grows_with_its_own_size()
    {
        // As above: two calls, each a batch of 1000 B and an answer of 1000 B: 1 ms per call and, per message, 1 ms per MB
        // per MB of that message (1 ms each; 4 ms if a call were one message of 2000 B), over 2 lanes.
        var (three, placement) = ThreeWithExpert2OnBAndC();
        var workload = new Workload([new TraceRequest(0, 2, [[1, 2, 1, 2]])]);
        var options = Options with { MessageSeconds = 0.001, MessageByteSquaredSeconds = 1e-9, MessageLanes = 2 };
        var metrics = new LatencyModel(Model, three, options).Evaluate(placement, workload);
        Assert.Equal(2 + 2 + 1.0 + 3.0, metrics.DecodeMsPerToken, 4);
    }

    [Fact]
    public void A_step_with_every_expert_local_sends_nothing_and_pays_no_bus_work()
    {
        var workload = new Workload([new TraceRequest(0, 2, [[0, 1, 0, 1]])]);
        var metrics = new LatencyModel(Model, Pair, Options with { MessageSeconds = 0.05 }).Evaluate(Split(), workload);
        Assert.Equal(2.0, metrics.DecodeMsPerToken, 6);
    }

    [Fact]
    public void Requests_shorter_than_the_decode_window_keep_one_prompt_token()
    {
        var options = new LatencyOptions { DecodeTokens = 64 };
        Assert.Equal((1, 9), options.Split(10));
        Assert.Equal((36, 64), options.Split(100));
    }
}
