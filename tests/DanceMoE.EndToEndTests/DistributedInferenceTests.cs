using DanceMoE.Contracts;
using DanceMoE.Edge;
using DanceMoE.Hosting;
using MassTransit;

namespace DanceMoE.EndToEndTests;

/// <summary>Three real edge processes over the real RabbitMQ, one expert replica each (uniform placement).</summary>
public sealed class UniformClusterFixture : IAsyncLifetime
{
    public static readonly string[] Edges = ["edge-1", "edge-2", "edge-3"];

    public EdgeCluster Cluster { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Cluster = await EdgeCluster.CreateAsync();
        var architecture = Cluster.Manifest.Architecture;
        var placement = Cluster.WritePlacement("uniform.json", PlacementFile.Uniform(1, architecture.NumLayers, architecture.NumExperts, Edges));
        await Cluster.StartEdgesAsync(Edges, placement);
    }

    public async Task DisposeAsync() => await Cluster.DisposeAsync();
}

public sealed class DistributedInferenceTests(UniformClusterFixture fixture) : IClassFixture<UniformClusterFixture>
{
    private EdgeCluster Cluster => fixture.Cluster;

    [Theory]
    [InlineData("edge-1", "the law court heard the translation of the summary")]
    [InlineData("edge-2", "edge servers share experts")]
    [InlineData("edge-3", "def main():\n    return 0")]
    public async Task Greedy_distributed_tokens_equal_the_monolithic_oracle_and_use_remote_experts(string edge, string prompt)
    {
        var expected = await Cluster.MonolithicAsync(prompt, 16);

        var answer = await Cluster.GenerateAsync(edge, prompt, 16);

        Assert.Equal(expected, answer.TokenIds);
        Assert.Equal(edge, answer.EdgeId);
        Assert.True(answer.Stats.RemoteExpertCalls > 0, "nothing was distributed");
        Assert.True(answer.Stats.LocalExpertCalls > 0, "nothing ran locally");
        Assert.True(answer.Stats.RemoteBytes > 0);
        Assert.Equal(0, answer.Stats.Retries);
        Assert.Equal(1, answer.Stats.PlacementVersion);
    }

    [Fact]
    public async Task A_remote_batch_carries_all_of_a_layers_experts_for_that_server_at_once()
    {
        var answer = await Cluster.GenerateAsync("edge-1", "one message per remote server per layer", 4);

        // Per forward step and layer at most one batch per remote server (2 here): prefill + 3 decode steps.
        var steps = 4;
        Assert.True(answer.Stats.RemoteBatches <= steps * Cluster.Manifest.Architecture.NumLayers * 2,
            $"{answer.Stats.RemoteBatches} batches for {steps} steps x {Cluster.Manifest.Architecture.NumLayers} layers");
        Assert.True(answer.Stats.RemoteExpertCalls >= answer.Stats.RemoteBatches);
    }

    [Fact]
    public async Task The_same_request_sent_twice_gives_the_same_answer()
    {
        var request = new GenerateText { RequestId = NewId.NextGuid(), Prompt = "redelivered", MaxNewTokens = 8 };
        var client = Cluster.Bus.CreateRequestClient<GenerateText>(EdgeQueues.RequestsAddress("edge-2"));

        var first = await client.GetResponse<TextGenerated>(request);
        var second = await client.GetResponse<TextGenerated>(request);

        Assert.Equal(first.Message.TokenIds, second.Message.TokenIds);
        Assert.Equal(request.RequestId, second.Message.RequestId);
    }

    [Theory]
    [InlineData("", 8, "the prompt is empty")]
    [InlineData("hello", 0, "max new tokens must be between 1 and 512")]
    [InlineData("hello", 100_000, "edge-1 generates at most 512 tokens per request; asked 100000")]
    public async Task Bad_requests_get_a_clear_fault(string prompt, int maxTokens, string message)
    {
        var client = Cluster.Bus.CreateRequestClient<GenerateText>(EdgeQueues.RequestsAddress("edge-1"));

        var fault = await Assert.ThrowsAsync<RequestFaultException>(() =>
            client.GetResponse<TextGenerated>(new GenerateText { RequestId = NewId.NextGuid(), Prompt = prompt, MaxNewTokens = maxTokens }));

        Assert.Contains(message, fault.Fault!.Exceptions[0].Message, StringComparison.Ordinal);
    }

    public static TheoryData<string, string> UnkeepableTags => new()
    {
        { new string('w', 129), "has 129 characters, at most 128" },
        { "a\0b", "contains U+0000, a control character or line break" },
        { "legal\nforged log line", "contains U+000A, a control character or line break" },
        { "\u001b[31mred", "contains U+001B, a control character or line break" },
        { "next\u0085line", "contains U+0085, a control character or line break" },
        { "line\u2028separator", "contains U+2028, a control character or line break" },
        { "paragraph\u2029separator", "contains U+2029, a control character or line break" },
    };

    [Theory]
    [MemberData(nameof(UnkeepableTags))]
    public async Task A_workload_tag_the_history_cannot_keep_gets_a_clear_fault_before_any_work(string tag, string problem)
    {
        var client = Cluster.Bus.CreateRequestClient<GenerateText>(EdgeQueues.RequestsAddress("edge-1"));

        var fault = await Assert.ThrowsAsync<RequestFaultException>(() =>
            client.GetResponse<TextGenerated>(new GenerateText { RequestId = NewId.NextGuid(), Prompt = "hello", MaxNewTokens = 4, WorkloadTag = tag }));

        Assert.Equal($"the workload tag {problem}", fault.Fault!.Exceptions[0].Message);
    }

    [Fact]
    public async Task A_prompt_longer_than_the_edge_accepts_gets_a_clear_fault()
    {
        var client = Cluster.Bus.CreateRequestClient<GenerateText>(EdgeQueues.RequestsAddress("edge-1"));

        var fault = await Assert.ThrowsAsync<RequestFaultException>(() =>
            client.GetResponse<TextGenerated>(new GenerateText { RequestId = NewId.NextGuid(), Prompt = new string('x', 5000), MaxNewTokens = 4 }));

        Assert.Contains("this edge accepts at most 1024 tokens", fault.Fault!.Exceptions[0].Message, StringComparison.Ordinal);
    }

    public static TheoryData<string, int, int, int, int, string> BadBatches => new()
    {
        { "layer out of range", 99, 0, 1, 128 * 4, "layer 99 is outside the model's 4 layers" },
        { "expert out of range", 0, 77, 1, 128 * 4, "expert 77 is outside layer 0's 16 experts" },
        { "malformed payload", 0, 0, 2, 128 * 4, "batch payload has 512 bytes; 2 rows x 128 float32 need 1024" },
        { "oversized payload", 0, 0, 1, 17 << 20, "exceeds this edge's limit of 16777216 bytes" },
        { "expert not held", 0, 1, 1, 128 * 4, "edge-1 does not hold expert 0.1" },
    };

    [Theory]
    [MemberData(nameof(BadBatches))]
    public async Task Bad_expert_batches_get_a_clear_fault(string why, int layer, int expert, int rows, int bytes, string message)
    {
        Assert.NotEmpty(why);
        var client = Cluster.Bus.CreateRequestClient<RunExpertBatch>(EdgeQueues.ExpertsAddress("edge-1"));
        var batch = new RunExpertBatch
        {
            BatchId = NewId.NextGuid(),
            OriginEdgeId = "test",
            Layer = layer,
            HiddenSize = 128,
            Slices = [new ExpertSlice { Expert = expert, Rows = rows }],
            Hidden = new byte[bytes],
        };

        var fault = await Assert.ThrowsAsync<RequestFaultException>(() => client.GetResponse<ExpertBatchResult>(batch));

        Assert.Contains(message, fault.Fault!.Exceptions[0].Message, StringComparison.Ordinal);
    }

    public static TheoryData<string, int[], int[][], int, string> BadTokenRows => new()
    {
        { "token row out of range", [2], [[0, 5]], 2, "expert 0.0 lists token row 5; the payload has 2" },
        { "fewer token rows than rows", [2], [[0]], 2, "expert 0.0 has 2 rows but lists 1 token rows" },
        { "some slices without token rows", [1, 1], [[0], []], 1, "1 of the batch's 2 slices list their token rows: all or none must" },
        { "token rows nobody uses", [1], [[0]], 3, "batch payload has 3 token rows but its slices use only 1 rows" },
        { "result over the limit", [40_000], [new int[40_000]], 1, "batch result of 40000 rows (20480000 bytes) exceeds this edge's limit of 16777216 bytes" },
    };

    [Theory]
    [MemberData(nameof(BadTokenRows))]
    public async Task Bad_token_rows_get_a_clear_fault(string why, int[] rows, int[][] tokenRows, int tokens, string message)
    {
        Assert.NotEmpty(why);
        var client = Cluster.Bus.CreateRequestClient<RunExpertBatch>(EdgeQueues.ExpertsAddress("edge-1"));
        var batch = new RunExpertBatch
        {
            BatchId = NewId.NextGuid(),
            OriginEdgeId = "test",
            Layer = 0,
            HiddenSize = 128,
            Slices = [.. rows.Select((r, i) => new ExpertSlice { Expert = 3 * i, Rows = r, TokenRows = tokenRows[i] })],
            Hidden = new byte[tokens * 128 * sizeof(float)],
        };

        var fault = await Assert.ThrowsAsync<RequestFaultException>(() => client.GetResponse<ExpertBatchResult>(batch));

        Assert.Contains(message, fault.Fault!.Exceptions[0].Message, StringComparison.Ordinal);
    }

    public static TheoryData<string, int[], int[][], float[][], int[], int, string> BadSumRows => new()
    {
        { "sum row out of range", [1], [[0]], [[1f]], [2], 1, "sum row 2 is outside the payload's 1 token rows" },
        { "sum rows repeated", [1, 1], [[0], [0]], [[1f], [1f]], [0, 0], 1, "sum rows must ascend without repeats: 0 follows 0" },
        { "experts out of order", [1, 1], [[0], [0]], [[1f], [1f]], [0], 1, "a batch with sum rows lists its experts in ascending order: 0 follows 3" },
        { "weights missing", [2], [[0, 1]], [[1f]], [0], 2, "expert 0.0 has 2 rows but 1 weights" },
        { "sum row in no slice", [1], [[0]], [[1f]], [1], 2, "sum row 1 is in none of the batch's slices" },
        { "sum rows without token rows", [1], [[]], [[1f]], [0], 1, "a batch with sum rows must list every slice's token rows" },
    };

    [Theory]
    [MemberData(nameof(BadSumRows))]
    public async Task Bad_sum_rows_get_a_clear_fault(string why, int[] rows, int[][] tokenRows, float[][] weights, int[] sumRows, int tokens, string message)
    {
        Assert.NotEmpty(why);
        var client = Cluster.Bus.CreateRequestClient<RunExpertBatch>(EdgeQueues.ExpertsAddress("edge-1"));
        int[] experts = why == "experts out of order" ? [3, 0] : [0, 3];
        var batch = new RunExpertBatch
        {
            BatchId = NewId.NextGuid(),
            OriginEdgeId = "test",
            Layer = 0,
            HiddenSize = 128,
            Slices = [.. rows.Select((r, i) => new ExpertSlice { Expert = experts[i], Rows = r, TokenRows = tokenRows[i], Weights = weights[i] })],
            Hidden = new byte[tokens * 128 * sizeof(float)],
            SumRows = sumRows,
        };

        var fault = await Assert.ThrowsAsync<RequestFaultException>(() => client.GetResponse<ExpertBatchResult>(batch));

        Assert.Contains(message, fault.Fault!.Exceptions[0].Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_batch_with_a_sum_row_answers_that_tokens_weighted_sum_in_expert_order_and_the_other_rows_as_they_are()
    {
        var hidden = Cluster.Manifest.Architecture.HiddenSize;
        var tokens = Enumerable.Range(0, 2 * hidden).Select(i => (float)Math.Cos(i)).ToArray();
        float[] Rows(params int[] ids) => [.. ids.SelectMany(t => tokens.Skip(t * hidden).Take(hidden))];
        var client = Cluster.Bus.CreateRequestClient<RunExpertBatch>(EdgeQueues.ExpertsAddress("edge-1"));

        // Token 0 needs experts 0 and 3 (both here): summed. Token 1 needs expert 0 and one elsewhere: its row as it is.
        var result = await client.GetResponse<ExpertBatchResult>(new RunExpertBatch
        {
            BatchId = NewId.NextGuid(),
            OriginEdgeId = "test",
            Layer = 0,
            HiddenSize = hidden,
            Slices =
            [
                new ExpertSlice { Expert = 0, Rows = 2, TokenRows = [1, 0], Weights = [0.25f, 0.625f] },
                new ExpertSlice { Expert = 3, Rows = 1, TokenRows = [0], Weights = [0.375f] },
            ],
            Hidden = TensorBytes.FromFloats(tokens),
            SumRows = [0],
        }, x => x.UseExecute(send => send.Serializer = ExpertBatchSerializer.Instance));

        var factory = new DanceMoE.Inference.SessionFactory(new DanceMoE.Inference.InferenceOptions { Provider = DanceMoE.Inference.ExecutionProvider.Cpu });
        using var pool = new DanceMoE.Inference.ExpertSessionPool(Cluster.Manifest, factory);
        var expert0 = pool.Run(0, 0, Rows(1, 0), 2);
        var sum = new float[hidden];
        DanceMoE.Inference.ExpertMix.AddWeighted(sum, 0.625f, expert0.AsSpan(hidden, hidden));
        DanceMoE.Inference.ExpertMix.AddWeighted(sum, 0.375f, pool.Run(0, 3, Rows(0), 1));
        Assert.Equal([.. expert0.Take(hidden), .. sum], TensorBytes.ToFloats(result.Message.Output));
        Assert.Equal([(0, 2), (3, 1)], result.Message.Slices.Select(s => (s.Expert, s.Rows)));
    }

    [Fact]
    public async Task A_binary_batch_that_sends_each_token_once_gives_every_expert_its_rows_as_the_local_sessions_do()
    {
        var hidden = Cluster.Manifest.Architecture.HiddenSize;
        var tokens = Enumerable.Range(0, 2 * hidden).Select(i => (float)Math.Sin(i)).ToArray();
        float[] Rows(params int[] ids) => [.. ids.SelectMany(t => tokens.Skip(t * hidden).Take(hidden))];
        var client = Cluster.Bus.CreateRequestClient<RunExpertBatch>(EdgeQueues.ExpertsAddress("edge-1"));
        var received = new ContentTypes();
        using var observer = Cluster.Bus.ConnectReceiveObserver(received);

        var result = await client.GetResponse<ExpertBatchResult>(new RunExpertBatch
        {
            BatchId = NewId.NextGuid(),
            OriginEdgeId = "test",
            Layer = 0,
            HiddenSize = hidden,
            Slices = [new ExpertSlice { Expert = 0, Rows = 3, TokenRows = [1, 0, 1] }, new ExpertSlice { Expert = 3, Rows = 1, TokenRows = [0] }],
            Hidden = TensorBytes.FromFloats(tokens),
        }, x => x.UseExecute(send => send.Serializer = ExpertBatchSerializer.Instance));

        var factory = new DanceMoE.Inference.SessionFactory(new DanceMoE.Inference.InferenceOptions { Provider = DanceMoE.Inference.ExecutionProvider.Cpu });
        using var pool = new DanceMoE.Inference.ExpertSessionPool(Cluster.Manifest, factory);
        Assert.Equal([.. pool.Run(0, 0, Rows(1, 0, 1), 3), .. pool.Run(0, 3, Rows(0), 1)], TensorBytes.ToFloats(result.Message.Output));
        Assert.Equal([(0, 3), (3, 1)], result.Message.Slices.Select(s => (s.Expert, s.Rows)));
        Assert.All(result.Message.Slices, s => Assert.Empty(s.TokenRows));
        Assert.Contains(ExpertBatchSerializer.BinaryContentType.MediaType, received.Seen);
    }

    /// <summary>The content types of the messages the test's bus received (the answers).</summary>
    private sealed class ContentTypes : IReceiveObserver
    {
        public System.Collections.Concurrent.ConcurrentBag<string?> Seen { get; } = [];

        public Task PreReceive(ReceiveContext context)
        {
            Seen.Add(context.ContentType?.MediaType);
            return Task.CompletedTask;
        }

        public Task PostReceive(ReceiveContext context) => Task.CompletedTask;

        public Task PostConsume<T>(ConsumeContext<T> context, TimeSpan duration, string consumerType)
            where T : class => Task.CompletedTask;

        public Task ConsumeFault<T>(ConsumeContext<T> context, TimeSpan duration, string consumerType, Exception exception)
            where T : class => Task.CompletedTask;

        public Task ReceiveFault(ReceiveContext context, Exception exception) => Task.CompletedTask;
    }

    [Fact]
    public async Task A_held_expert_batch_gives_the_same_output_as_the_local_session()
    {
        var hidden = Cluster.Manifest.Architecture.HiddenSize;
        var input = Enumerable.Range(0, 2 * hidden).Select(i => (float)Math.Sin(i)).ToArray();
        var client = Cluster.Bus.CreateRequestClient<RunExpertBatch>(EdgeQueues.ExpertsAddress("edge-1"));

        var result = await client.GetResponse<ExpertBatchResult>(new RunExpertBatch
        {
            BatchId = NewId.NextGuid(),
            OriginEdgeId = "test",
            Layer = 0,
            HiddenSize = hidden,
            Slices = [new ExpertSlice { Expert = 0, Rows = 2 }],
            Hidden = TensorBytes.FromFloats(input),
        });

        var factory = new DanceMoE.Inference.SessionFactory(new DanceMoE.Inference.InferenceOptions { Provider = DanceMoE.Inference.ExecutionProvider.Cpu });
        using var pool = new DanceMoE.Inference.ExpertSessionPool(Cluster.Manifest, factory);
        Assert.Equal(pool.Run(0, 0, input, 2), TensorBytes.ToFloats(result.Message.Output));
        Assert.Equal("edge-1", result.Message.EdgeId);
    }

    [Fact]
    public async Task Expert_batch_calls_get_the_peers_answer_its_refusal_as_a_fault_and_a_timeout_when_nobody_answers()
    {
        var hidden = Cluster.Manifest.Architecture.HiddenSize;
        var input = Enumerable.Range(0, hidden).Select(i => (float)Math.Cos(i)).ToArray();
        using var calls = new ExpertBatchCalls(Cluster.Bus);
        RunExpertBatch Batch(int expert) => new()
        {
            BatchId = NewId.NextGuid(),
            OriginEdgeId = "test",
            Layer = 0,
            HiddenSize = hidden,
            Slices = [new ExpertSlice { Expert = expert, Rows = 1, TokenRows = [0] }],
            Hidden = TensorBytes.FromFloats(input),
        };

        var held = Batch(0);
        var answers = await Task.WhenAll(calls.CallAsync(EdgeQueues.ExpertsAddress("edge-1"), held, TimeSpan.FromSeconds(20), CancellationToken.None),
            calls.CallAsync(EdgeQueues.ExpertsAddress("edge-1"), Batch(0), TimeSpan.FromSeconds(20), CancellationToken.None));
        var refused = await Assert.ThrowsAsync<RequestFaultException>(
            () => calls.CallAsync(EdgeQueues.ExpertsAddress("edge-1"), Batch(1), TimeSpan.FromSeconds(20), CancellationToken.None));
        await Assert.ThrowsAsync<RequestTimeoutException>(
            () => calls.CallAsync(EdgeQueues.ExpertsAddress("edge-9"), Batch(0), TimeSpan.FromMilliseconds(300), CancellationToken.None));

        var factory = new DanceMoE.Inference.SessionFactory(new DanceMoE.Inference.InferenceOptions { Provider = DanceMoE.Inference.ExecutionProvider.Cpu });
        using var pool = new DanceMoE.Inference.ExpertSessionPool(Cluster.Manifest, factory);
        Assert.Equal(held.BatchId, answers[0].BatchId);
        Assert.NotEqual(answers[0].BatchId, answers[1].BatchId);
        Assert.All(answers, a => Assert.Equal(pool.Run(0, 0, input, 1), TensorBytes.ToFloats(a.Output)));
        Assert.Contains("edge-1 does not hold expert 0.1", refused.Fault!.Exceptions[0].Message, StringComparison.Ordinal);
    }
}
