using DanceMoE.Hosting;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;

namespace DanceMoE.IntegrationTests;

public sealed record EchoRequest(Guid Id, string Text);

public sealed record EchoReply(Guid Id, string Text, string HandledBy);

public sealed class EchoConsumer : IConsumer<EchoRequest>
{
    public Task Consume(ConsumeContext<EchoRequest> context) =>
        context.RespondAsync(new EchoReply(context.Message.Id, context.Message.Text.ToUpperInvariant(), context.ReceiveContext.InputAddress.AbsolutePath));
}

public sealed class BusRequestResponseTests(IsolatedVirtualHost vhost) : IClassFixture<IsolatedVirtualHost>
{
    [Fact]
    public async Task A_request_crosses_RabbitMQ_and_the_consumer_response_comes_back()
    {
        await using var provider = new ServiceCollection()
            .AddMassTransit(bus =>
            {
                bus.AddConsumer<EchoConsumer>();
                bus.UsingRabbitMq((context, cfg) =>
                {
                    new RabbitMqOptions { ConnectionString = vhost.Uri }.ConfigureHost(cfg);
                    cfg.ConfigureEndpoints(context);
                });
            })
            .BuildServiceProvider(true);
        var busControl = provider.GetRequiredService<IBusControl>();
        await busControl.StartAsync(new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token);
        try
        {
            var client = busControl.CreateRequestClient<EchoRequest>(TimeSpan.FromSeconds(30));
            var id = NewId.NextGuid();

            var response = await client.GetResponse<EchoReply>(new EchoRequest(id, "edge servers share experts"));

            Assert.Equal(id, response.Message.Id);
            Assert.Equal("EDGE SERVERS SHARE EXPERTS", response.Message.Text);
            Assert.Contains(vhost.Name, response.Message.HandledBy, StringComparison.Ordinal);
        }
        finally
        {
            await busControl.StopAsync();
        }
    }

    [Fact]
    public async Task A_request_to_a_queue_without_consumer_times_out_with_a_clear_error()
    {
        await using var provider = new ServiceCollection()
            .AddMassTransit(bus => bus.UsingRabbitMq((context, cfg) => new RabbitMqOptions { ConnectionString = vhost.Uri }.ConfigureHost(cfg)))
            .BuildServiceProvider(true);
        var busControl = provider.GetRequiredService<IBusControl>();
        await busControl.StartAsync();
        try
        {
            var client = busControl.CreateRequestClient<EchoRequest>(new Uri("queue:nobody-listens"), TimeSpan.FromMilliseconds(500));

            await Assert.ThrowsAsync<RequestTimeoutException>(() => client.GetResponse<EchoReply>(new EchoRequest(Guid.NewGuid(), "lost?")));
        }
        finally
        {
            await busControl.StopAsync();
        }
    }
}
