using System.Diagnostics;
using DanceMoE.Operations;

namespace DanceMoE.IntegrationTests;

/// <summary>A bus client declares its request channel's response queue only once something asks for the channel.</summary>
public sealed class BusClientTests(IsolatedVirtualHost virtualHost) : IClassFixture<IsolatedVirtualHost>
{
    [Fact]
    public async Task A_bus_client_that_sends_no_request_declares_no_response_queue_until_its_requests_are_used()
    {
        await using var client = await BusClient.StartAsync(virtualHost.Uri, CancellationToken.None);

        // The bus declares its own endpoint's queue only when something uses it too.
        Assert.Equal(0, await QueuesSettledAsync());

        _ = client.Requests;
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while ((await virtualHost.QueuesAsync()).Count == 0)
        {
            Assert.True(DateTime.UtcNow < deadline, "the request channel declared no queue in 20 s");
            await Task.Delay(100);
        }

        Assert.Single(await virtualHost.QueuesAsync());
    }

    /// <summary>The queue count once it has not changed for two seconds: what the client declares at start, and nothing later.</summary>
    private async Task<int> QueuesSettledAsync()
    {
        var count = (await virtualHost.QueuesAsync()).Count;
        for (var stable = Stopwatch.StartNew(); stable.Elapsed < TimeSpan.FromSeconds(2);)
        {
            await Task.Delay(200);
            var now = (await virtualHost.QueuesAsync()).Count;
            if (now != count)
            {
                (count, stable) = (now, Stopwatch.StartNew());
            }
        }

        return count;
    }
}
