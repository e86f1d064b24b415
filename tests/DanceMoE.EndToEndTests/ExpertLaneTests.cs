using System.Text;
using DanceMoE.Contracts;
using DanceMoE.Edge;
using DanceMoE.Hosting;
using MassTransit;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using RabbitMQ.Client;

namespace DanceMoE.EndToEndTests;

/// <summary>The expert lane of a real edge: what it answers to batches a peer sends, and to messages meant to break it.</summary>
public sealed class ExpertLaneTests(SingleEdgeFixture fixture) : IClassFixture<SingleEdgeFixture>
{
    private EdgeCluster Cluster => fixture.Cluster;

    [Fact]
    public async Task A_peer_gets_its_batch_run_and_a_refused_batch_fails_at_once_with_the_edges_reason()
    {
        await using var lane = await ConnectAsync("edge-lane-peer");
        var hidden = Cluster.Manifest.Architecture.HiddenSize;

        var result = await lane.CallAsync("edge-1", Batch(layer: 0, new byte[hidden * sizeof(float)]), TimeSpan.FromSeconds(20), CancellationToken.None);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var refused = await Assert.ThrowsAsync<ExpertLaneException>(
            () => lane.CallAsync("edge-1", Batch(layer: 99, new byte[hidden * sizeof(float)]), TimeSpan.FromSeconds(20), CancellationToken.None));

        Assert.Equal(hidden * sizeof(float), result.Output.Length);
        Assert.Equal("edge-1", result.EdgeId);
        Assert.Contains("layer 99 is outside the model's", refused.Message, StringComparison.Ordinal);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), "the refusal came as the deadline's timeout, not as a fault");
    }

    [Fact]
    public async Task A_malformed_batch_is_answered_with_a_fault_and_the_edge_keeps_serving()
    {
        var answer = await PublishRawAsync(Encoding.UTF8.GetBytes("not an expert batch"), sign: true);
        await using var lane = await ConnectAsync("edge-lane-after-garbage");
        var hidden = Cluster.Manifest.Architecture.HiddenSize;
        var result = await lane.CallAsync("edge-1", Batch(layer: 0, new byte[hidden * sizeof(float)]), TimeSpan.FromSeconds(20), CancellationToken.None);

        Assert.Equal(ExpertLane.FaultType, answer.Type);
        Assert.Contains("names a message of", answer.Text, StringComparison.Ordinal);
        Assert.Equal(hidden * sizeof(float), result.Output.Length);
    }

    [Fact]
    public async Task An_oversized_batch_is_refused_before_it_is_read()
    {
        var limit = new EdgeOptions().MaxBatchBytes + MessageSizeFilter.MaxCommandBytes;

        var answer = await PublishRawAsync(new byte[limit + 1], sign: true);

        Assert.Equal(ExpertLane.FaultType, answer.Type);
        Assert.Contains($"expert batch of {limit + 1} bytes exceeds this edge's limit of {limit} bytes", answer.Text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_batch_without_the_senders_broker_user_is_refused()
    {
        var hidden = Cluster.Manifest.Architecture.HiddenSize;

        var answer = await PublishRawAsync(ExpertBatchSerializer.Encode(Batch(layer: 0, new byte[hidden * sizeof(float)])), sign: false);

        Assert.Equal(ExpertLane.FaultType, answer.Type);
        Assert.Contains("expert batches are taken from broker user", answer.Text, StringComparison.Ordinal);
    }

    private RunExpertBatch Batch(int layer, byte[] hidden) => new()
    {
        BatchId = NewId.NextGuid(),
        OriginEdgeId = "edge-lane-test",
        Layer = layer,
        HiddenSize = Cluster.Manifest.Architecture.HiddenSize,
        Slices = [new ExpertSlice { Expert = 0, Rows = 1 }],
        Hidden = hidden,
    };

    private async Task<ExpertLane> ConnectAsync(string edgeId)
    {
        var lane = new ExpertLane(
            Options.Create(new RabbitMqOptions { ConnectionString = Cluster.VirtualHost.Uri }),
            Options.Create(new EdgeOptions { Id = edgeId }),
            NullLogger<ExpertLane>.Instance);
        await lane.ConnectAsync(CancellationToken.None);
        return lane;
    }

    /// <summary>Publishes <paramref name="body"/> to edge-1's lane as a batch and returns the answer on a replies queue of the test's own.</summary>
    private async Task<(string? Type, string Text)> PublishRawAsync(byte[] body, bool sign)
    {
        var broker = RabbitMqOptions.Parse(Cluster.VirtualHost.Uri);
        await using var connection = await broker.ConnectionFactory().CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync();
        var replies = ExpertLaneQueues.Replies("edge-lane-raw-" + Guid.NewGuid().ToString("N")[..8]);
        await ExpertLane.DeclareAsync(channel, replies, CancellationToken.None);
        var properties = new BasicProperties { Type = ExpertLane.BatchType, CorrelationId = Guid.NewGuid().ToString("N"), ReplyTo = replies, UserId = sign ? broker.Username : null };
        await channel.BasicPublishAsync(ExpertLaneQueues.Exchange, ExpertLaneQueues.Batches("edge-1"), mandatory: false, properties, body);

        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (DateTime.UtcNow < deadline)
        {
            if (await channel.BasicGetAsync(replies, autoAck: true) is { } answer)
            {
                Assert.Equal(properties.CorrelationId, answer.BasicProperties.CorrelationId);
                return (answer.BasicProperties.Type, Encoding.UTF8.GetString(answer.Body.Span));
            }

            await Task.Delay(100);
        }

        throw new TimeoutException($"edge-1 did not answer on its lane within 30 s; its log:\n{Cluster.LogOf("edge-1")}");
    }
}
