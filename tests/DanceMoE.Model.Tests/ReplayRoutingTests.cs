using DanceMoE.Inference;
using DanceMoE.Model.Onnx;

namespace DanceMoE.Model.Tests;

public sealed class ReplayRoutingTests : IDisposable
{
    private static readonly InferenceOptions Cpu = new() { Provider = ExecutionProvider.Cpu, IntraOpThreads = 1 };
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task A_replayed_request_runs_the_recorded_experts_of_every_position_and_layer_through_prefill_and_decode()
    {
        var manifest = Export();
        var c = manifest.Architecture;
        var recorded = Recorded(c.NumLayers, positions: 5, c.TopK, c.NumExperts);
        using var pool = new ExpertSessionPool(manifest, new SessionFactory(Cpu));
        using var forward = new MoeForward(manifest, new SessionFactory(Cpu), new LocalExpertDispatcher(pool));
        var context = new ForwardContext(recordRouting: true) { Replay = new ReplayRouting(c.TopK, recorded) };
        var state = forward.NewState();
        await forward.ForwardAsync([256, 97, 98], state, context, CancellationToken.None);
        await forward.ForwardAsync([99], state, context, CancellationToken.None);
        await forward.ForwardAsync([100], state, context, CancellationToken.None);

        Assert.Equal(5 * c.NumLayers, context.Decisions.Count);
        foreach (var decision in context.Decisions)
        {
            Assert.Equal(recorded[decision.Layer].AsSpan(decision.Position * c.TopK, c.TopK).ToArray(), decision.Choices.Select(x => x.Expert));
            Assert.All(decision.Choices, x => Assert.Equal(1f / c.TopK, x.Weight));
        }
    }

    [Fact]
    public async Task Without_a_replay_the_router_decides_and_differs_from_a_recorded_routing()
    {
        var manifest = Export();
        var c = manifest.Architecture;
        var recorded = Recorded(c.NumLayers, positions: 3, c.TopK, c.NumExperts);
        using var pool = new ExpertSessionPool(manifest, new SessionFactory(Cpu));
        using var forward = new MoeForward(manifest, new SessionFactory(Cpu), new LocalExpertDispatcher(pool));
        var routed = new ForwardContext(recordRouting: true);
        var replayed = new ForwardContext(recordRouting: true) { Replay = new ReplayRouting(c.TopK, recorded) };
        await forward.ForwardAsync([256, 97, 98], forward.NewState(), routed, CancellationToken.None);
        await forward.ForwardAsync([256, 97, 98], forward.NewState(), replayed, CancellationToken.None);

        Assert.NotEqual(
            replayed.Decisions.Select(d => string.Join(",", d.Choices.Select(x => x.Expert))),
            routed.Decisions.Select(d => string.Join(",", d.Choices.Select(x => x.Expert))));
    }

    [Fact]
    public async Task A_position_beyond_the_recording_fails_the_request()
    {
        var manifest = Export();
        var c = manifest.Architecture;
        using var pool = new ExpertSessionPool(manifest, new SessionFactory(Cpu));
        using var forward = new MoeForward(manifest, new SessionFactory(Cpu), new LocalExpertDispatcher(pool));
        var context = new ForwardContext { Replay = new ReplayRouting(c.TopK, Recorded(c.NumLayers, positions: 2, c.TopK, c.NumExperts)) };

        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => forward.ForwardAsync([256, 97, 98], forward.NewState(), context, CancellationToken.None));
    }

    [Fact]
    public void A_replay_trace_file_reads_back_the_requests_it_was_written_with()
    {
        var path = Directory.CreateDirectory(_dir.Sub("trace")).FullName + "/replay.json";
        var experts = Recorded(layers: 2, positions: 3, topK: 2, experts: 4);
        new ReplayTrace(2, [new ReplayTraceRequest(17, 3, experts)]).Save(path);

        var loaded = ReplayTrace.Load(path, experts: 4);

        Assert.Null(loaded.Routing(16));
        var routing = loaded.Routing(17)!;
        Assert.Equal(3, routing.Positions);
        Assert.Equal(experts[1].AsSpan(4, 2).ToArray(), routing.At(1, 2).Select(x => x.Expert));
    }

    [Theory]
    [InlineData("{", "not a replay trace (")]
    [InlineData("null", "no \"requests\" list")]
    [InlineData("{\"top_k\": 0, \"requests\": []}", "top_k 0 is not a positive number of experts per token")]
    [InlineData("{\"top_k\": 2, \"requests\": [null]}", "a request has no \"experts\" of every layer")]
    [InlineData("{\"top_k\": 2, \"requests\": [{\"id\": 1, \"experts\": [[0, 1], [0, 1, 2]]}]}", "request 1 needs the same positional length, a multiple of top-2, in every layer")]
    [InlineData("{\"top_k\": 2, \"requests\": [{\"id\": 1, \"experts\": [[0, 4]]}]}", "request 1 names an expert outside the model's 4")]
    [InlineData("{\"top_k\": 2, \"requests\": [{\"id\": 1, \"experts\": [[0, -1]]}]}", "request 1 names an expert outside the model's 4")]
    [InlineData("{\"top_k\": 2, \"requests\": [{\"id\": 1, \"experts\": [[0, 1]]}, {\"id\": 1, \"experts\": [[2, 3]]}]}", "request 1 is listed twice")]
    public void A_replay_trace_file_the_edge_cannot_replay_is_one_line_naming_it(string json, string error)
    {
        var path = Directory.CreateDirectory(_dir.Sub("trace")).FullName + "/replay.json";
        File.WriteAllText(path, json);

        var thrown = Assert.Throws<ModelFormatException>(() => ReplayTrace.Load(path, experts: 4));

        Assert.StartsWith($"{path}: {error}", thrown.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', thrown.Message);
    }

    [Fact]
    public async Task A_replay_trace_that_is_a_fifo_is_refused_instead_of_waiting_for_a_writer()
    {
        var path = Directory.CreateDirectory(_dir.Sub("trace")).FullName + "/replay.json";
        using (var mkfifo = System.Diagnostics.Process.Start("/usr/bin/mkfifo", [path]))
        {
            await mkfifo.WaitForExitAsync();
            Assert.Equal(0, mkfifo.ExitCode);
        }

        var load = Task.Run(() => ReplayTrace.Load(path, experts: 4));
        var finished = await Task.WhenAny(load, Task.Delay(TimeSpan.FromSeconds(10))) == load;
        if (!finished)
        {
            // Lets the blocked open go on, so that the test fails rather than leaves a thread waiting.
            await using (new FileStream(path, FileMode.Open, FileAccess.Write))
            {
            }
        }

        Assert.True(finished, "reading a FIFO for a replay trace waited for a writer");
        var error = await Assert.ThrowsAsync<ModelFormatException>(() => load);
        Assert.Equal($"{path} is not a regular file", error.Message);
    }

    /// <summary>Per layer, k distinct experts per position, chosen so that they are unlikely to be the router's.</summary>
    private static int[][] Recorded(int layers, int positions, int topK, int experts) =>
        [.. Enumerable.Range(0, layers).Select(l => Enumerable.Range(0, positions).SelectMany(p => Enumerable.Range(0, topK).Select(i => (l + p + i) % experts)).ToArray())];

    private ModelManifest Export()
    {
        var checkpoint = _dir.Sub("ckpt");
        TinyCheckpoint.Write(checkpoint, TinyModels.Small() with { Experts = 8 });
        var exported = _dir.Sub("onnx");
        OnnxExporter.Export(Checkpoint.Open(checkpoint), exported, TensorDtype.F32);
        return ModelManifest.Load(exported);
    }
}
