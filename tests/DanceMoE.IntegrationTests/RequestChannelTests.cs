using System.Diagnostics;
using DanceMoE.Contracts;
using DanceMoE.Hosting;
using MassTransit;
using RabbitMQ.Client;

namespace DanceMoE.IntegrationTests;

/// <summary>A request channel whose publishes the real broker rejects: a queue that is always full and refuses what comes.</summary>
public sealed class RequestChannelTests(IsolatedVirtualHost virtualHost) : IClassFixture<IsolatedVirtualHost>
{
    [Fact]
    public async Task Publishes_the_broker_keeps_rejecting_replace_the_response_endpoint_at_most_once_a_second()
    {
        const string full = "always-full";
        var broker = RabbitMqOptions.Parse(virtualHost.Uri);
        await using (var connection = await broker.ConnectionFactory().CreateConnectionAsync(broker.Endpoints()))
        await using (var channel = await connection.CreateChannelAsync())
        {
            await channel.ExchangeDeclareAsync(full, ExchangeType.Fanout, durable: true);
            await channel.QueueDeclareAsync(full, durable: true, exclusive: false, autoDelete: false, new Dictionary<string, object?> { ["x-max-length"] = 0, ["x-overflow"] = "reject-publish" });
            await channel.QueueBindAsync(full, full, "");
        }

        await using var bus = await TestBus.StartAsync(virtualHost.Uri);
        await using var requests = new RequestChannel(bus.Bus);
        var sends = new List<Task>();
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(3))
        {
            sends.Add(SendAsync(requests, ReplicatedQueues.SendAddress(full)));
            await Task.Delay(20);
        }

        await Task.WhenAll(sends);

        // One at once, then one a second while the rejections go on: 3 s of them, and their last sends' half second.
        Assert.True(requests.Replacements is >= 2 and <= 4, $"{requests.Replacements} replacements");
    }

    private static async Task SendAsync(RequestChannel requests, Uri destination)
    {
        using var giveUp = new CancellationTokenSource(TimeSpan.FromMilliseconds(500));
        try
        {
            await requests.SendAsync(destination, new CancelGeneration { RequestId = NewId.NextGuid() }, giveUp.Token);
        }
        catch (Exception ex) when (ex is OperationCanceledException or MassTransitException or RabbitMQ.Client.Exceptions.RabbitMQClientException)
        {
            // Rejected: what the test is about.
        }
    }
}
