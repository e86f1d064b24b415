using System.Collections.Concurrent;
using DanceMoE.Contracts;
using DanceMoE.Hosting;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;

namespace DanceMoE.IntegrationTests;

/// <summary>Which sends wait for the broker's publisher confirm, as the bus configures them, on the real broker's addresses.</summary>
public sealed class SendConfirmTests(IsolatedVirtualHost virtualHost) : IClassFixture<IsolatedVirtualHost>
{
    [Fact]
    public async Task Expert_batches_and_replies_go_out_without_awaiting_the_confirm_and_commands_await_it()
    {
        var awaitAck = new ConcurrentDictionary<string, bool>();
        await using var provider = new ServiceCollection()
            .AddMassTransit(bus => bus.UsingRabbitMq((_, cfg) =>
            {
                new RabbitMqOptions { ConnectionString = virtualHost.Uri }.ConfigureHost(cfg);
                cfg.ConfigureSend(send => send.UseSendExecute(context =>
                {
                    if (context.TryGetPayload(out RabbitMqSendContext? rabbit) && context.DestinationAddress is { } destination)
                    {
                        awaitAck[destination.Segments[^1]] = rabbit.AwaitAck;
                    }
                }));
            }))
            .BuildServiceProvider(true);
        var bus = provider.GetRequiredService<IBusControl>();
        await bus.StartAsync(new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token);
        try
        {
            var message = new GenerateText { RequestId = NewId.NextGuid(), Prompt = "confirms" };
            await (await bus.GetSendEndpoint(EdgeQueues.ExpertsAddress("edge-confirms"))).Send(message);
            await (await bus.GetSendEndpoint(bus.Address)).Send(message);
            await (await bus.GetSendEndpoint(ReplicatedQueues.SendAddress("confirms-durable"))).Send(message);
        }
        finally
        {
            await bus.StopAsync();
        }

        Assert.False(awaitAck["edge-confirms-experts"]);
        Assert.False(awaitAck[bus.Address.Segments[^1]]);
        Assert.True(awaitAck["confirms-durable"]);
    }
}
