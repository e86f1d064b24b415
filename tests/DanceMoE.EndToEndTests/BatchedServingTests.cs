using System.Globalization;
using DanceMoE.Contracts;
using DanceMoE.Edge;
using DanceMoE.Hosting;
using DanceMoE.Inference;
using DanceMoE.IntegrationTests;
using DanceMoE.Model;
using DanceMoE.Operations;
using MassTransit;

namespace DanceMoE.EndToEndTests;

/// <summary>Edges that batch their requests step by step: same answers, bounded waiting, slots freed, dead peers contained.</summary>
public sealed class BatchedServingTests(UniformClusterFixture fixture) : IClassFixture<UniformClusterFixture>
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(20) };

    private static readonly string[] Prompts =
    [
        "NAME ls - list directory contents", "def parse_args(argv):", "BESCHREIBUNG Dieses Programm", "DESCRIPTION La commande",
        "import os, sys", "OPTIONS -h, --help show", "Die Datei wird gelesen", "class Config(object):",
        "le fichier de configuration", "RETURN VALUE On success", "for line in open(path):", "SIEHE AUCH",
        "the law court heard", "edge servers share experts", "while True:\n    pass", "VOIR AUSSI",
    ];

    [Fact]
    public async Task Sixteen_prompts_sent_at_once_each_get_their_monolithic_tokens_and_share_remote_batches()
    {
        var cluster = fixture.Cluster;
        var expected = new List<IReadOnlyList<int>>();
        foreach (var prompt in Prompts)
        {
            expected.Add(await cluster.MonolithicAsync(prompt, 12));
        }

        var answers = await Task.WhenAll(Prompts.Select((prompt, i) => cluster.GenerateAsync(UniformClusterFixture.Edges[i % 3], prompt, 12, TimeSpan.FromSeconds(120))));

        for (var i = 0; i < Prompts.Length; i++)
        {
            Assert.True(expected[i].SequenceEqual(answers[i].TokenIds), $"prompt {i} ({Prompts[i]}): batched answer differs from the monolithic one");
        }

        Assert.True(answers.Sum(a => a.Stats.RemoteExpertCalls) > 0, "nothing was distributed");
        // Edges that batch hold each layer's dense weights once, in the step graphs.
        Assert.All(UniformClusterFixture.Edges, e => Assert.Contains(
            $"dense graphs: Steps, {3 * cluster.Manifest.Layers.Count} files", cluster.LogOf(e), StringComparison.Ordinal));
        // A message shared by several requests counts once over all of them: batching shows as a share below the count.
        Assert.True(answers.Sum(a => a.Stats.RemoteBatchShare) < answers.Sum(a => a.Stats.RemoteBatches),
            $"no remote batch carried rows of two requests: share {answers.Sum(a => a.Stats.RemoteBatchShare)}, batches {answers.Sum(a => a.Stats.RemoteBatches)}");
    }

    [Fact]
    public async Task A_full_waiting_queue_refuses_the_next_request_at_once_with_a_capacity_fault()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 41);
        var a = cluster.Manifest.Architecture;
        string[] edges = ["edge-1", "edge-2"];
        var placement = cluster.WritePlacement("uniform.json", PlacementFile.Uniform(1, a.NumLayers, a.NumExperts, edges));
        await cluster.StartEdgesAsync(edges, placement, extraArguments: ["--max-active", "1", "--max-waiting", "1", "--link-delay-ms", "5"]);

        var requests = Enumerable.Range(0, 5).Select(i => Attempt(cluster.GenerateAsync("edge-1", "capacity " + i, 40, TimeSpan.FromSeconds(120)))).ToList();
        var outcomes = await Task.WhenAll(requests);

        var refused = outcomes.Where(o => o.Fault is not null).ToList();
        var served = outcomes.Where(o => o.Answer is not null).ToList();
        Assert.True(served.Count >= 2, $"{served.Count} served: one active and one waiting should be");
        Assert.NotEmpty(refused);
        Assert.All(refused, o => Assert.Contains("edge-1 is at capacity: 1 waiting", o.Fault!, StringComparison.Ordinal));
        Assert.Equal(5, served.Count + refused.Count);
        // One request at a time: the one dense graph per layer, not the steps.
        Assert.Contains($"dense graphs: OneGraph, {cluster.Manifest.Layers.Count} files", cluster.LogOf("edge-1"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_request_whose_client_gave_up_leaves_the_batch_and_frees_its_slot()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 43);
        var port = await StartOneSlotEdgeAsync(cluster);
        var expected = await cluster.MonolithicAsync("after the impatient one", 6);

        // 500 tokens (this prompt does not end early on this model), most paying 10 ms of emulated round trip per remote layer:
        // far beyond the 6 s the client waits. Its time to live is those 6 s too, long enough for the broker to hand it to
        // edge-1 on a loaded machine (2 s once was not).
        var impatient = Attempt(cluster.GenerateAsync("edge-1", "the client waits no longer", 500, TimeSpan.FromSeconds(6)));
        // The next request is sent once the impatient one holds the only slot (or has already left it), so it is served only if the slot is freed.
        await MetricsUntilAsync(port, m => Active(m) >= 1 || Cancelled(m) >= 1, cluster, impatient);
        var next = await cluster.GenerateAsync("edge-1", "after the impatient one", 6, TimeSpan.FromSeconds(60));
        var gaveUp = await impatient;

        Assert.Equal(expected, next.TokenIds);
        Assert.Contains("Timeout", gaveUp.Fault ?? $"(answered: {gaveUp.Answer!.TokenIds.Count} tokens in {gaveUp.Answer.Stats})", StringComparison.Ordinal);
        // The edge drops the request at its first step past the deadline, which the client's own timer may beat.
        var metrics = await MetricsUntilAsync(port, m => Cancelled(m) >= 1 && Active(m) == 0, cluster);
        Assert.Equal(1, Cancelled(metrics));
        Assert.Equal(0, Active(metrics));
    }

    [Fact]
    public async Task A_request_its_sender_cancels_leaves_the_batch_at_the_next_step_long_before_its_deadline()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 79);
        var port = await StartOneSlotEdgeAsync(cluster);
        var expected = await cluster.MonolithicAsync("after the cancelled one", 6);

        // 500 tokens, most of them paying 10 ms of emulated round trip per remote layer: seconds, and a deadline of ten minutes.
        using var giveUp = new CancellationTokenSource();
        var cancelled = SendLongAsync(cluster, "cancelled", giveUp.Token);
        await MetricsUntilAsync(port, m => Active(m) >= 1, cluster);
        await giveUp.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);

        // Had the cancel not reached the edge, the request would run to its 500 tokens and count as completed, not cancelled.
        var metrics = await MetricsUntilAsync(port, m => Cancelled(m) >= 1 && Active(m) == 0, cluster);
        Assert.Equal(1, Cancelled(metrics));
        Assert.Equal(0, metrics.GetValueOrDefault("dancemoe_requests_total{status=\"completed\"}"));
        var next = await cluster.GenerateAsync("edge-1", "after the cancelled one", 6, TimeSpan.FromSeconds(60));
        Assert.Equal(expected, next.TokenIds);
        await cluster.LogUntilAsync("edge-1", "cancelled by its sender");
    }

    [Fact]
    public async Task A_waiting_request_its_sender_cancels_leaves_the_waiting_queue_while_the_slot_is_still_taken()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 83);
        var port = await StartOneSlotEdgeAsync(cluster);

        // The first request holds the only slot for many seconds (500 tokens, most paying 10 ms of emulated round trip per remote layer).
        using var stopFirst = new CancellationTokenSource();
        var first = SendLongAsync(cluster, "holds the slot", stopFirst.Token);
        await MetricsUntilAsync(port, m => Active(m) >= 1, cluster);
        using var giveUp = new CancellationTokenSource();
        var waiting = SendLongAsync(cluster, "waits, then gives up", giveUp.Token);
        await MetricsUntilAsync(port, m => Waiting(m) >= 1, cluster);
        await giveUp.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);

        // Left at the next step, not when the slot frees: the first request is still the active one.
        var metrics = await MetricsUntilAsync(port, m => Cancelled(m) >= 1 && Waiting(m) == 0 && Active(m) == 1, cluster);
        Assert.Equal(1, Cancelled(metrics));
        await cluster.LogUntilAsync("edge-1", "cancelled while it waited for a slot");

        await stopFirst.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => first);
        metrics = await MetricsUntilAsync(port, m => Cancelled(m) >= 2 && Active(m) == 0, cluster);
        Assert.Equal(0, metrics.GetValueOrDefault("dancemoe_requests_total{status=\"completed\"}"));
    }

    [Fact]
    public async Task A_cancel_that_overtakes_its_request_ends_the_request_when_it_arrives()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 89);
        var port = await StartOneSlotEdgeAsync(cluster);
        var requestId = NewId.NextGuid();

        // The cancel is consumed before its request is sent: the order a concurrent consumer may take them in.
        var endpoint = await cluster.Bus.GetSendEndpoint(EdgeQueues.RequestsAddress("edge-1"));
        await endpoint.Send(new CancelGeneration { RequestId = requestId });
        await cluster.LogUntilAsync("edge-1", $"a cancel of request {requestId}");
        using var stop = new CancellationTokenSource();
        var overtaken = SendLongAsync(cluster, "overtaken by its cancel", stop.Token, requestId);

        // Had the edge forgotten the cancel, the request would run to its 500 tokens and count as completed.
        var metrics = await MetricsUntilAsync(port, m => Cancelled(m) >= 1, cluster);
        Assert.Equal(1, Cancelled(metrics));
        Assert.Equal(0, Active(metrics));
        await cluster.LogUntilAsync("edge-1", $"request {requestId} cancelled by its sender before it arrived");
        await stop.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => overtaken);
        Assert.Equal(0, (await MetricsUntilAsync(port, m => true, cluster)).GetValueOrDefault("dancemoe_requests_total{status=\"completed\"}"));
    }

    /// <summary>
    /// edge-1 with one slot, four waiting places and its /metrics, edge-2 serving half the experts, 5 ms links: a long
    /// request holds edge-1's only slot for seconds. Returns edge-1's metrics port.
    /// </summary>
    private static async Task<int> StartOneSlotEdgeAsync(EdgeCluster cluster)
    {
        var a = cluster.Manifest.Architecture;
        string[] edges = ["edge-1", "edge-2"];
        var placement = cluster.WritePlacement("uniform.json", PlacementFile.Uniform(1, a.NumLayers, a.NumExperts, edges));
        var port = TestPorts.Free();
        await cluster.StartEdgesAsync(edges.Take(1), placement, extraArguments:
            ["--max-active", "1", "--max-waiting", "4", "--link-delay-ms", "5", "--metrics-port", port.ToString(CultureInfo.InvariantCulture)]);
        await cluster.StartEdgesAsync(edges.Skip(1), placement, extraArguments: ["--link-delay-ms", "5"]);
        return port;
    }

    /// <summary>500 tokens to edge-1 with a deadline of ten minutes, as a service sends it: cancelling the token cancels the request.</summary>
    private static Task<TextGenerated> SendLongAsync(EdgeCluster cluster, string prompt, CancellationToken giveUp, Guid? requestId = null) =>
        EdgeRequests.SendAsync(cluster.Requests, "edge-1", new GenerateText { RequestId = requestId ?? NewId.NextGuid(), Prompt = prompt, MaxNewTokens = 500 }, TimeSpan.FromMinutes(10), giveUp);

    private static double Active(Dictionary<string, double> metrics) => metrics.GetValueOrDefault("dancemoe_requests_active");

    private static double Waiting(Dictionary<string, double> metrics) => metrics.GetValueOrDefault("dancemoe_requests_waiting");

    private static double Cancelled(Dictionary<string, double> metrics) => metrics.GetValueOrDefault("dancemoe_requests_total{status=\"cancelled\"}");

    /// <summary>edge-1's metrics once <paramref name="condition"/> holds; fails after 20 s, or at once when <paramref name="sent"/> ended before it held.</summary>
    private static async Task<Dictionary<string, double>> MetricsUntilAsync(int port, Func<Dictionary<string, double>, bool> condition, EdgeCluster cluster, Task<(TextGenerated? Answer, string? Fault)>? sent = null)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (true)
        {
            var metrics = MetricsTests.Parse(await Http.GetStringAsync(FormattableString.Invariant($"http://127.0.0.1:{port}/metrics")));
            if (condition(metrics) || DateTime.UtcNow > deadline)
            {
                return condition(metrics) ? metrics : throw new Xunit.Sdk.XunitException(
                    $"edge-1's metrics did not settle in 20 s: active {Active(metrics)}, waiting {Waiting(metrics)}, cancelled {Cancelled(metrics)}; its log:\n{cluster.LogOf("edge-1")}");
            }

            if (sent is { IsCompleted: true })
            {
                var outcome = await sent;
                throw new Xunit.Sdk.XunitException(
                    $"the request ended ({outcome.Fault ?? "answered"}) before edge-1's metrics showed it: active {Active(metrics)}, waiting {Waiting(metrics)}, cancelled {Cancelled(metrics)}; its log:\n{cluster.LogOf("edge-1")}");
            }

            await Task.Delay(50);
        }
    }

    [Fact]
    public async Task A_dead_peer_fails_only_the_requests_that_need_its_experts_and_the_others_in_the_batch_finish_correctly()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 47);
        var a = cluster.Manifest.Architecture;
        string[] prompts = ["ab", "cd", "ef", "gh", "ij", "kl", "mn", "op", "qr", "st"];
        const int tokens = 3;
        var routes = new List<HashSet<(int Layer, int Expert)>>();
        var expected = new List<IReadOnlyList<int>>();
        foreach (var prompt in prompts)
        {
            var (ids, used) = await MonolithicWithRoutingAsync(cluster.Manifest, prompt, tokens);
            expected.Add(ids);
            routes.Add(used);
        }

        // The expert whose loss splits the prompts most evenly: only edge-3 holds it, edge-1 holds every other expert.
        var lost = Enumerable.Range(0, a.NumLayers).SelectMany(l => Enumerable.Range(0, a.NumExperts).Select(e => (Layer: l, Expert: e)))
            .OrderBy(x => Math.Abs(routes.Count(r => r.Contains(x)) - (prompts.Length / 2.0))).ThenBy(x => x)
            .First();
        var needing = Enumerable.Range(0, prompts.Length).Where(i => routes[i].Contains(lost)).ToList();
        Assert.True(needing.Count > 0 && needing.Count < prompts.Length, $"no expert splits the prompts: {needing.Count} of {prompts.Length} need {lost}");
        var assignments = PlacementFile.Uniform(1, a.NumLayers, a.NumExperts, ["edge-1"]).Assignments
            .Select(x => (x.Layer, x.Expert) == lost ? x with { Servers = ["edge-3"] } : x);
        var placement = cluster.WritePlacement("one-lost.json", new EdgePlacement(1, assignments));
        var port = TestPorts.Free();
        await cluster.StartEdgesAsync(["edge-1"], placement, deadlineMs: 1000, extraArguments: ["--max-active", "16", "--metrics-port", port.ToString(CultureInfo.InvariantCulture)]);
        await cluster.StartEdgesAsync(["edge-3"], placement, deadlineMs: 1000, extraArguments: ["--max-active", "16"]);
        cluster.Kill("edge-3");

        var outcomes = await Task.WhenAll(prompts.Select(p => Attempt(cluster.GenerateAsync("edge-1", p, tokens, TimeSpan.FromSeconds(60)))));
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(20) };
        var metrics = MetricsTests.Parse(await http.GetStringAsync(new Uri(FormattableString.Invariant($"http://127.0.0.1:{port}/metrics"))));

        for (var i = 0; i < prompts.Length; i++)
        {
            if (needing.Contains(i))
            {
                Assert.Contains(FormattableString.Invariant($"expert {lost.Layer}.{lost.Expert} failed on edge-3"), outcomes[i].Fault ?? "(answered)", StringComparison.Ordinal);
            }
            else
            {
                Assert.True(outcomes[i].Answer is not null, $"prompt {i} does not need {lost} but failed: {outcomes[i].Fault}");
                Assert.Equal(expected[i], outcomes[i].Answer!.TokenIds);
            }
        }

        // Each step that needed the lost expert sent edge-3 one batch, which failed: an operator sees which peer fails.
        Assert.InRange(metrics.GetValueOrDefault("dancemoe_peer_batch_failures_total{peer=\"edge-3\"}"), 1, needing.Count * (tokens + 1) * a.NumLayers);
        Assert.DoesNotContain(metrics.Keys, k => k.StartsWith("dancemoe_peer_batch_bytes_total", StringComparison.Ordinal) && k.Contains("direction=\"received\"", StringComparison.Ordinal) && metrics[k] > 0);
    }

    private static async Task<(IReadOnlyList<int> Tokens, HashSet<(int Layer, int Expert)> Used)> MonolithicWithRoutingAsync(ModelManifest manifest, string prompt, int maxTokens)
    {
        var factory = new SessionFactory(new InferenceOptions { Provider = ExecutionProvider.Cpu });
        using var pool = new ExpertSessionPool(manifest, factory);
        using var forward = new MoeForward(manifest, factory, new LocalExpertDispatcher(pool));
        var tokenizer = new ByteTokenizer(manifest.Tokenizer!.BosTokenId, manifest.Tokenizer.EosTokenId);
        var context = new ForwardContext(recordRouting: true);
        var result = await Generator.GenerateAsync(forward, tokenizer, tokenizer.Encode(prompt), maxTokens, new SamplingOptions(), context, CancellationToken.None);
        return (result.TokenIds, [.. context.Decisions.SelectMany(d => d.Choices.Select(c => (d.Layer, c.Expert)))]);
    }

    private static async Task<(TextGenerated? Answer, string? Fault)> Attempt(Task<TextGenerated> request)
    {
        try
        {
            return (await request, null);
        }
        catch (RequestFaultException fault)
        {
            return (null, fault.Fault?.Exceptions.FirstOrDefault()?.Message ?? fault.Message);
        }
        catch (RequestTimeoutException timeout)
        {
            return (null, "Timeout: " + timeout.Message);
        }
    }
}
