using DanceMoE.Contracts;
using DanceMoE.Edge;
using DanceMoE.Hosting;
using DanceMoE.Operations;
using MassTransit;

namespace DanceMoE.EndToEndTests;

public sealed class SetAsideByOwnerTests
{
    [Fact]
    public async Task A_faulted_request_and_a_refused_control_message_from_another_broker_user_are_dropped_once_and_the_edge_keeps_serving()
    {
        await using var cluster = await EdgeCluster.CreateAsync(seed: 67);
        var a = cluster.Manifest.Architecture;
        var everything = PlacementFile.Uniform(1, a.NumLayers, a.NumExperts, ["edge-1"]);
        var spread = PlacementFile.Uniform(1, a.NumLayers, a.NumExperts, ["edge-1", "edge-2"]);
        cluster.CoordinatorUser = BusRoles.UserOf(BusRole.Coordinator);
        // Slow links: every token waits for the other edge, so a request with a short time to live passes its deadline mid-answer.
        await cluster.StartEdgesAsync(["edge-1", "edge-2"], cluster.WritePlacement("spread.json", spread), extraArguments: ["--link-delay-ms", "100"]);

        // The client role's own user, as a front end connects: not the edge's, so the broker lets the edge publish
        // none of the client's messages again under the client's user_id.
        var client = RabbitMqOptions.Parse(LocalEnvironment.RabbitMqUriFor(BusRole.Client));
        await cluster.VirtualHost.GrantAsync(client.Username);
        var bus = Bus.Factory.CreateUsingRabbitMq(cfg => new RabbitMqOptions { ConnectionString = client.UriFor(cluster.VirtualHost.Name) }.ConfigureHost(cfg));
        await bus.StartAsync();
        try
        {
            // Refused before it runs: the client's fault, and one warning line, no R-FAULT.
            var requests = bus.CreateRequestClient<GenerateText>(EdgeQueues.RequestsAddress("edge-1"), RequestTimeout.After(s: 30));
            var invalid = NewId.NextGuid();
            var fault = await Assert.ThrowsAsync<RequestFaultException>(() => requests.GetResponse<TextGenerated>(
                new GenerateText { RequestId = invalid, Prompt = "far too long an answer", MaxNewTokens = 100_000 }));
            Assert.Contains("edge-1 generates at most 512 tokens per request; asked 100000", fault.Fault!.Exceptions[0].Message, StringComparison.Ordinal);

            // Faulted while it runs: its deadline (the request's time to live) passes after a few tokens.
            var late = NewId.NextGuid();
            var hurried = bus.CreateRequestClient<GenerateText>(EdgeQueues.RequestsAddress("edge-1"), RequestTimeout.After(s: 2));
            await Assert.ThrowsAsync<RequestTimeoutException>(() => hurried.GetResponse<TextGenerated>(new GenerateText { RequestId = late, Prompt = "slowly", MaxNewTokens = 64 }));

            var control = await bus.GetSendEndpoint(EdgeQueues.ControlAddress("edge-1"));
            await control.Send(new PlacementActivated { Version = 2, Assignments = everything.Assignments, ActivatedAt = DateTimeOffset.UtcNow });

            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (!(cluster.LogOf("edge-1").Contains("not moved to the _error queue", StringComparison.Ordinal)
                && cluster.LogOf("edge-1").Contains("not moved to the _skipped queue", StringComparison.Ordinal)) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(250);
            }

            // A message the edge could not set aside came back to it about once a second until it expired.
            await Task.Delay(TimeSpan.FromSeconds(4));
            var log = cluster.LogOf("edge-1");
            Assert.Equal(1, Occurrences(log, $"refused request {invalid} from broker user '{client.Username}': edge-1 generates at most 512 tokens per request; asked 100000"));
            Assert.Equal(1, Occurrences(log, $"from broker user '{client.Username}' faulted (request {late} passed its deadline after "));
            Assert.Equal(1, Occurrences(log, "and is dropped, not moved to the _error queue"));
            Assert.Equal(1, Occurrences(log, $"from broker user '{client.Username}' was not consumed and is dropped, not moved to the _skipped queue"));
            Assert.Equal(1, Occurrences(log, $"refused: sent by RabbitMQ user '{client.Username}'"));
            Assert.Equal(1, Occurrences(log, "R-FAULT"));
            Assert.Contains($"request {late} passed its deadline", log.Split('\n').Single(l => l.Contains("R-FAULT", StringComparison.Ordinal)), StringComparison.Ordinal);

            var answer = await requests.GetResponse<TextGenerated>(new GenerateText { RequestId = NewId.NextGuid(), Prompt = "still serving", MaxNewTokens = 4 });
            Assert.Equal(4, answer.Message.TokenIds.Count);
            Assert.Equal(1, (await cluster.GenerateAsync("edge-1", "which placement", 1)).Stats.PlacementVersion);
        }
        finally
        {
            await bus.StopAsync();
        }
    }

    private static int Occurrences(string text, string what)
    {
        var count = 0;
        for (var at = text.IndexOf(what, StringComparison.Ordinal); at >= 0; at = text.IndexOf(what, at + what.Length, StringComparison.Ordinal))
        {
            count++;
        }

        return count;
    }
}
