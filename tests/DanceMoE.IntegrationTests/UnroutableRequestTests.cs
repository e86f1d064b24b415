using DanceMoE.Contracts;
using DanceMoE.Hosting;
using DanceMoE.Operations;
using MassTransit;

namespace DanceMoE.IntegrationTests;

/// <summary>A request to an edge whose queue nobody has declared, on the real broker: returned by it at once, never lost in silence.</summary>
public sealed class UnroutableRequestTests(IsolatedVirtualHost virtualHost) : IClassFixture<IsolatedVirtualHost>
{
    [Fact]
    public async Task A_raw_send_to_an_undeclared_edge_request_queue_faults_as_returned()
    {
        await using var bus = await TestBus.StartAsync(virtualHost.Uri);
        var endpoint = await bus.Bus.GetSendEndpoint(EdgeQueues.RequestsAddress("edge-nobody-raw"));

        await Assert.ThrowsAsync<MessageReturnedException>(() => endpoint.Send(new GenerateText { RequestId = NewId.NextGuid(), Prompt = "anyone?", MaxNewTokens = 1 }));
    }

    [Fact]
    public async Task A_request_to_an_edge_nobody_serves_fails_naming_the_edge_rather_than_timing_out()
    {
        await using var bus = await TestBus.StartAsync(virtualHost.Uri);
        await using var requests = new RequestChannel(bus.Bus);

        var error = await Assert.ThrowsAsync<OperationException>(() => EdgeRequests.SendAsync(
            requests, "edge-nobody", new GenerateText { RequestId = NewId.NextGuid(), Prompt = "anyone?", MaxNewTokens = 1 }, TimeSpan.FromSeconds(60), CancellationToken.None));

        Assert.Contains("edge 'edge-nobody' is not serving", error.Message, StringComparison.Ordinal);
        Assert.Contains("'edge-nobody'", error.Message, StringComparison.Ordinal);
        Assert.Equal(OperationFailure.Unavailable, error.Failure);
    }
}
