using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using DanceMoE.Contracts;
using DanceMoE.Edge;
using DanceMoE.Hosting;
using DanceMoE.IntegrationTests;
using MassTransit;

namespace DanceMoE.EndToEndTests;

/// <summary>One real edge that holds every expert, on its own virtual host, for messages meant to break it.</summary>
public sealed class SingleEdgeFixture : IAsyncLifetime
{
    public EdgeCluster Cluster { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Cluster = await EdgeCluster.CreateAsync(seed: 29);
        var a = Cluster.Manifest.Architecture;
        var placement = Cluster.WritePlacement("all.json", PlacementFile.Uniform(1, a.NumLayers, a.NumExperts, ["edge-1"]));
        await Cluster.StartEdgesAsync(["edge-1"], placement);
    }

    public async Task DisposeAsync() => await Cluster.DisposeAsync();
}

public sealed class HostileInputTests(SingleEdgeFixture fixture) : IClassFixture<SingleEdgeFixture>
{
    private EdgeCluster Cluster => fixture.Cluster;

    [Fact]
    public async Task An_edge_keeps_serving_after_requests_whose_reply_exchange_cannot_be_declared_as_asked()
    {
        // A durable exchange the reply address asks for as transient: the broker refuses the declaration and closes
        // the channel it came on.
        const string taken = "hostile-reply";
        await ManagementAsync(HttpMethod.Put, $"api/exchanges/{Cluster.VirtualHost.Name}/{taken}", new { type = "fanout", durable = true });
        var broker = RabbitMqOptions.Parse(Cluster.VirtualHost.Uri);
        var unusable = new Uri($"rabbitmq://{broker.Host}:{broker.Port}/{Cluster.VirtualHost.Name}/{taken}?durable=false&autodelete=true");
        var skippedBefore = await MessagesAsync("edge-1_skipped");

        var requests = await Cluster.Bus.GetSendEndpoint(EdgeQueues.RequestsAddress("edge-1"));
        for (var i = 0; i < 3; i++)
        {
            await requests.Send(
                new GenerateText { RequestId = NewId.NextGuid(), Prompt = "reply nowhere", MaxNewTokens = 2 },
                context =>
                {
                    context.RequestId = NewId.NextGuid();
                    context.ResponseAddress = unusable;
                });
        }

        await WaitForMessagesAsync("edge-1_skipped", skippedBefore + 3);
        var answer = await Cluster.GenerateAsync("edge-1", "still serving", 4, TimeSpan.FromSeconds(30));

        Assert.Equal(4, answer.TokenIds.Count);
        Assert.Equal(skippedBefore + 3, await MessagesAsync("edge-1_skipped"));
    }

    [Fact]
    public async Task An_edge_keeps_serving_after_a_message_of_a_type_its_queue_does_not_take_and_one_that_is_no_message()
    {
        var skippedBefore = await MessagesAsync("edge-1_skipped");
        var errorsBefore = await MessagesAsync("edge-1_error");

        await PublishRawAsync("edge-1", """{"messageId":"00000000-0000-0000-0000-000000000001","messageType":["urn:message:Hostile:Nothing"],"message":{}}""");
        await PublishRawAsync("edge-1", "{ this is not json");

        await WaitForMessagesAsync("edge-1_skipped", skippedBefore + 1);
        await WaitForMessagesAsync("edge-1_error", errorsBefore + 1);
        var answer = await Cluster.GenerateAsync("edge-1", "still serving", 4, TimeSpan.FromSeconds(30));

        Assert.Equal(4, answer.TokenIds.Count);
    }

    [Fact]
    public async Task An_edge_keeps_serving_after_a_request_over_its_size_limit_which_is_set_aside_unread()
    {
        var skippedBefore = await MessagesAsync("edge-1_skipped");
        var giant = new string('x', (int)MessageSizeFilter.MaxCommandBytes + 1);

        var requests = await Cluster.Bus.GetSendEndpoint(EdgeQueues.RequestsAddress("edge-1"));
        await requests.Send(new GenerateText { RequestId = NewId.NextGuid(), Prompt = giant, MaxNewTokens = 2 });

        await WaitForMessagesAsync("edge-1_skipped", skippedBefore + 1);
        var answer = await Cluster.GenerateAsync("edge-1", "still serving", 4, TimeSpan.FromSeconds(30));

        Assert.Equal(4, answer.TokenIds.Count);
        await Cluster.LogUntilAsync("edge-1", "exceed the endpoint's limit");
    }

    [Fact]
    public async Task An_edge_keeps_answering_expert_batches_after_binary_bodies_whose_envelope_length_lies()
    {
        var queue = EdgeQueues.Experts("edge-1");
        foreach (var body in new[] { new byte[] { 0xff, 0xff, 0xff, 0x7f, 1, 2 }, new byte[] { 1, 0 }, "{}"u8.ToArray() })
        {
            await ManagementAsync(
                HttpMethod.Post,
                $"api/exchanges/{Cluster.VirtualHost.Name}/amq.default/publish",
                new
                {
                    properties = new { content_type = ExpertBatchSerializer.BinaryContentType.MediaType },
                    routing_key = queue,
                    payload = Convert.ToBase64String(body),
                    payload_encoding = "base64",
                });
        }

        await Cluster.LogUntilAsync("edge-1", "names an envelope of 2147483647 bytes");

        var hidden = Cluster.Manifest.Architecture.HiddenSize;
        var client = Cluster.Bus.CreateRequestClient<RunExpertBatch>(EdgeQueues.ExpertsAddress("edge-1"));
        var result = await client.GetResponse<ExpertBatchResult>(
            new RunExpertBatch
            {
                BatchId = NewId.NextGuid(),
                OriginEdgeId = "test",
                Layer = 0,
                HiddenSize = hidden,
                Slices = [new ExpertSlice { Expert = 0, Rows = 1 }],
                Hidden = new byte[hidden * sizeof(float)],
            },
            x => x.UseExecute(send => send.Serializer = ExpertBatchSerializer.Instance));

        Assert.Equal(hidden * sizeof(float), result.Message.Output.Length);
    }

    private Task PublishRawAsync(string queue, string body) => ManagementAsync(
        HttpMethod.Post,
        $"api/exchanges/{Cluster.VirtualHost.Name}/amq.default/publish",
        new { properties = new { content_type = "application/vnd.masstransit+json" }, routing_key = queue, payload = body, payload_encoding = "string" });

    // The management API counts a queue's messages every few seconds: wait for the count rather than read it once.
    private async Task WaitForMessagesAsync(string queue, long expected)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        long seen;
        while ((seen = await MessagesAsync(queue)) < expected && DateTime.UtcNow < deadline)
        {
            await Task.Delay(250);
        }

        Assert.True(seen >= expected, $"{queue} holds {seen} messages, expected {expected}; edge log:\n{Cluster.LogOf("edge-1")}");
    }

    private async Task<long> MessagesAsync(string queue)
    {
        using var client = ManagementClient();
        using var response = await client.GetAsync(new Uri($"api/queues/{Cluster.VirtualHost.Name}/{queue}", UriKind.Relative));
        if (!response.IsSuccessStatusCode)
        {
            return 0;
        }

        var state = await response.Content.ReadFromJsonAsync<JsonElement>();
        return state.TryGetProperty("messages", out var messages) ? messages.GetInt64() : 0;
    }

    private async Task ManagementAsync(HttpMethod method, string path, object body)
    {
        using var client = ManagementClient();
        using var request = new HttpRequestMessage(method, new Uri(path, UriKind.Relative)) { Content = JsonContent.Create(body) };
        using var response = await client.SendAsync(request);
        response.EnsureSuccessStatusCode();
    }

    private HttpClient ManagementClient()
    {
        var broker = RabbitMqOptions.Parse(Cluster.VirtualHost.Uri);
        var client = new HttpClient { BaseAddress = new Uri(TestServices.ManagementUrl) };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue(
            "Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{broker.Username}:{broker.Password}")));
        return client;
    }
}
