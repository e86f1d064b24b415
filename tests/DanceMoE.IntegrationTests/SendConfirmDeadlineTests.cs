using System.Collections.Concurrent;
using DanceMoE.Contracts;
using DanceMoE.Hosting;
using MassTransit;

namespace DanceMoE.IntegrationTests;

/// <summary>A consumer's send bounded by <see cref="SendConfirmDeadline"/>, on the real broker: past it the message faults by name, and the endpoint goes on.</summary>
public sealed class SendConfirmDeadlineTests(IsolatedVirtualHost virtualHost) : IClassFixture<IsolatedVirtualHost>
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(3);

    [Fact]
    public async Task A_send_past_its_deadline_faults_the_consumed_message_as_not_confirmed_and_the_endpoint_consumes_the_next()
    {
        var faults = new ConcurrentDictionary<Guid, string>();
        var forwarded = new ConcurrentDictionary<Guid, bool>();
        await using var bus = await TestBus.StartAsync(virtualHost.Uri, cfg =>
        {
            cfg.ReceiveEndpoint("confirm-deadline-commands", e =>
            {
                e.UseSendConfirmDeadline(Deadline);
                e.Handler<GenerateText>(async context =>
                {
                    var deadline = SendConfirmDeadline.For(context);
                    if (context.Message.Prompt == "late")
                    {
                        // The send starts after its deadline, as one whose confirm never comes ends past it.
                        await Task.Delay(Deadline * 2);
                    }

                    var target = await context.GetSendEndpoint(ReplicatedQueues.SendAddress("confirm-deadline-target"));
                    await SendConfirmDeadline.Confirmed(target.Send(context.Message, deadline), "the forwarded request", deadline);
                    forwarded[context.Message.RequestId] = true;
                });
            });
            cfg.ReceiveEndpoint("confirm-deadline-faults", e => e.Handler<Fault<GenerateText>>(context =>
            {
                faults[context.Message.Message.RequestId] = context.Message.Exceptions.FirstOrDefault()?.ExceptionType ?? "";
                return Task.CompletedTask;
            }));
        });
        var commands = await bus.Bus.GetSendEndpoint(new Uri("queue:confirm-deadline-commands"));
        var late = NewId.NextGuid();
        var onTime = NewId.NextGuid();

        await commands.Send(new GenerateText { RequestId = late, Prompt = "late" });
        await WaitUntilAsync(() => faults.ContainsKey(late), "the late send's fault");
        await commands.Send(new GenerateText { RequestId = onTime, Prompt = "on time" });
        await WaitUntilAsync(() => forwarded.ContainsKey(onTime), "the next message forwarded");

        Assert.Equal(typeof(SendNotConfirmedException).FullName, faults[late]);
        Assert.False(forwarded.ContainsKey(late));
        Assert.False(faults.ContainsKey(onTime));
    }

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for {what}");
            await Task.Delay(100);
        }
    }
}
