using DanceMoE.Contracts;
using DanceMoE.Hosting;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace DanceMoE.IntegrationTests;

/// <summary>What an operator reads when a queue is sent a message it has no consumer for.</summary>
public sealed class SkippedMessageTests : IAsyncLifetime
{
    private readonly IsolatedVirtualHost _vhost = new();

    public Task InitializeAsync() => _vhost.InitializeAsync();

    public Task DisposeAsync() => _vhost.DisposeAsync();

    [Fact]
    public async Task A_message_of_a_type_the_queue_does_not_consume_is_moved_to_skipped_with_one_warning_naming_it_the_queue_and_its_sender()
    {
        var queue = TestServices.UniqueName("skipped").Replace('_', '-');
        var cancelled = new TaskCompletionSource<CancelGeneration>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var provider = new ServiceCollection()
            .AddFakeLogging()
            .AddSingleton(cancelled)
            .Configure<RabbitMqOptions>(o => o.ConnectionString = _vhost.Uri)
            .AddMassTransit(bus =>
            {
                bus.AddSetAsideByOwner();
                bus.AddConsumer<CancelConsumer>().Endpoint(e => e.Name = queue);
                bus.UsingRabbitMq((context, cfg) =>
                {
                    new RabbitMqOptions { ConnectionString = _vhost.Uri }.ConfigureHost(cfg);
                    cfg.ConfigureEndpoints(context);
                });
            })
            .BuildServiceProvider(true);
        var bus = provider.GetRequiredService<IBusControl>();
        await bus.StartAsync(new CancellationTokenSource(TimeSpan.FromSeconds(60)).Token);
        try
        {
            var endpoint = await bus.GetSendEndpoint(new Uri($"queue:{queue}"));
            var unconsumed = NewId.NextGuid();
            await endpoint.Send(new GenerateText { RequestId = NewId.NextGuid(), Prompt = "no consumer here", MaxNewTokens = 1 }, c => c.MessageId = unconsumed);
            var consumed = NewId.NextGuid();
            await endpoint.Send(new CancelGeneration { RequestId = consumed });

            // One at a time, in order: the second is consumed after the first was moved aside.
            Assert.Equal(consumed, (await cancelled.Task.WaitAsync(TimeSpan.FromSeconds(30))).RequestId);
            var warnings = provider.GetFakeLogCollector().GetSnapshot().Where(r => r.Level >= LogLevel.Warning).ToList();
            var warning = Assert.Single(warnings);
            Assert.Equal(typeof(SetAsideByOwner).FullName, warning.Category);
            var broker = RabbitMqOptions.Parse(_vhost.Uri);
            var expected = $"message {unconsumed} (urn:message:DanceMoE.Contracts:GenerateText) on rabbitmq://{broker.Host}:{broker.Port}/{_vhost.Name}/{queue} "
                + $"from broker user '{broker.Username}' has no consumer there and is moved to the _skipped queue";
            Assert.Equal(expected, warning.Message);
        }
        finally
        {
            await bus.StopAsync(new CancellationTokenSource(TimeSpan.FromSeconds(15)).Token);
        }
    }

    private sealed class CancelConsumer(TaskCompletionSource<CancelGeneration> cancelled) : IConsumer<CancelGeneration>
    {
        public Task Consume(ConsumeContext<CancelGeneration> context)
        {
            cancelled.TrySetResult(context.Message);
            return Task.CompletedTask;
        }
    }
}
