using System.Net;
using System.Net.Http.Headers;
using System.Text;
using DanceMoE.Contracts;
using DanceMoE.Hosting;
using DanceMoE.Operations;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;
using RabbitMQ.Client;

namespace DanceMoE.IntegrationTests;

/// <summary>
/// The users <c>./dancemoe services up</c> makes, one per role, on the application's virtual host: what the broker lets
/// each of them publish (with publisher confirms), and who reads the management API. Nothing here is delivered: every
/// publish that is allowed goes to an exchange of the test's own.
/// </summary>
public sealed class BusPermissionsTests
{
    [Theory]
    [InlineData("DanceMoE.Contracts:PlacementActivated")]
    [InlineData("DanceMoE.Contracts:UnloadExpert")]
    [InlineData("edge-1-control")]
    [InlineData("DanceMoE.Contracts:EdgeHeartbeat")]
    [InlineData("coordinator")]
    [InlineData("expert-lane")]
    public async Task The_client_user_may_not_publish_control_heartbeats_or_coordinator_commands(string exchange)
    {
        Assert.Equal(403, await PublishAsync(BusRole.Client, exchange));
    }

    [Fact]
    public async Task A_send_the_broker_refuses_for_the_users_permissions_fails_with_what_was_refused_instead_of_retrying()
    {
        await using var client = await BusClient.StartAsync(RoleUri(BusRole.Client), CancellationToken.None);
        using var giveUp = new CancellationTokenSource(TimeSpan.FromSeconds(60));

        // Tried again on a new channel until the caller gave up: the demo, which never did, hung there.
        var refused = await Assert.ThrowsAsync<SendRefusedException>(
            () => client.Requests.SendAsync(ReplicatedQueues.SendAddress("coordinator"), RunNow(), giveUp.Token));

        Assert.False(giveUp.IsCancellationRequested);
        Assert.Contains("ACCESS_REFUSED", refused.Message, StringComparison.Ordinal);
        Assert.Contains("'coordinator'", refused.Message, StringComparison.Ordinal);
    }

    /// <summary>MassTransit tries a refused endpoint again without end: the start would have waited out its 30 s and blamed the broker.</summary>
    [Fact]
    public async Task A_client_bus_with_an_endpoint_its_user_may_not_take_fails_at_start_with_the_refusal()
    {
        var error = await Assert.ThrowsAsync<OperationException>(() => BusClient.StartAsync(
            RoleUri(BusRole.Client), cfg => cfg.ReceiveEndpoint(EdgeQueues.Experts("edge-1"), _ => { }), CancellationToken.None));

        Assert.Equal(OperationFailure.InvalidSettings, error.Failure);
        Assert.StartsWith("the broker refused access (ACCESS_REFUSED", error.Message, StringComparison.Ordinal);
        Assert.Contains("refused for user 'dancemoe-client'", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_request_the_broker_refuses_for_the_users_permissions_fails_with_what_was_refused_before_its_timeout()
    {
        await using var client = await BusClient.StartAsync(RoleUri(BusRole.Client), CancellationToken.None);

        var refused = await Assert.ThrowsAsync<SendRefusedException>(() => client.Requests.GetResponse<RunPlacementNow, PlacementActivated>(
            ReplicatedQueues.SendAddress("coordinator"), RunNow(), RequestTimeout.After(s: 60), CancellationToken.None));

        Assert.Contains("ACCESS_REFUSED", refused.Message, StringComparison.Ordinal);
    }

    /// <summary>The channel still sends what the user may: a refusal is not taken for the ones after it.</summary>
    [Fact]
    public async Task After_a_refused_send_the_channel_sends_what_the_user_may()
    {
        await using var client = await BusClient.StartAsync(RoleUri(BusRole.Client), CancellationToken.None);
        await Assert.ThrowsAsync<SendRefusedException>(
            () => client.Requests.SendAsync(ReplicatedQueues.SendAddress("coordinator"), RunNow(), CancellationToken.None));

        var edge = TestServices.UniqueName("edge-refused").Replace('_', '-').ToLowerInvariant();
        await using (var connection = await Factory(RoleUri(BusRole.Admin)).CreateConnectionAsync())
        await using (var channel = await connection.CreateChannelAsync())
        {
            await channel.ExchangeDeclareAsync(edge, ExchangeType.Fanout, durable: true);
            await channel.QueueDeclareAsync(edge, durable: false, exclusive: false, autoDelete: false);
            await channel.QueueBindAsync(edge, edge, string.Empty);
        }

        try
        {
            using var giveUp = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await client.Requests.SendAsync(EdgeQueues.RequestsAddress(edge), new CancelGeneration { RequestId = NewId.NextGuid() }, giveUp.Token);
            Assert.Equal(1u, await QueueLengthAsync(edge));
        }
        finally
        {
            await BusClient.DeleteQueueAsync(RoleUri(BusRole.Admin), edge, CancellationToken.None);
        }
    }

    [Theory]
    [InlineData("DanceMoE.Contracts:PlacementActivated")]
    [InlineData("DanceMoE.Contracts:LoadExpert")]
    [InlineData("coordinator")]
    public async Task The_edge_user_may_not_publish_placements_or_migration_commands(string exchange)
    {
        Assert.Equal(403, await PublishAsync(BusRole.Edge, exchange));
    }

    [Theory]
    [InlineData("DanceMoE.Contracts:EdgeHeartbeat")]
    [InlineData("DanceMoE.Contracts:CancelGeneration")]
    [InlineData("expert-lane")]
    public async Task The_coordinator_user_may_not_publish_heartbeats_cancels_or_expert_batches(string exchange)
    {
        Assert.Equal(403, await PublishAsync(BusRole.Coordinator, exchange));
    }

    /// <summary>What MassTransit does for each message type an edge's request queue consumes: the type's exchange bound to the queue's.</summary>
    [Theory]
    [InlineData("GenerateText")]
    [InlineData("CancelGeneration")]
    public async Task The_edge_user_declares_the_message_type_exchanges_of_its_request_queue_and_binds_them_to_it(string type)
    {
        await using var connection = await Factory(RoleUri(BusRole.Edge)).CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync();
        var endpoint = TestServices.UniqueName("edge-types").Replace('_', '-').ToLowerInvariant();
        await channel.ExchangeDeclareAsync($"DanceMoE.Contracts:{type}", ExchangeType.Fanout, durable: true);
        await channel.ExchangeDeclareAsync(endpoint, ExchangeType.Fanout, durable: true);
        try
        {
            await channel.ExchangeBindAsync(endpoint, $"DanceMoE.Contracts:{type}", string.Empty);
        }
        finally
        {
            await channel.ExchangeDeleteAsync(endpoint);
        }
    }

    [Fact]
    public async Task The_edge_user_publishes_on_the_expert_lane_and_declares_and_reads_an_edges_lane_queues()
    {
        await using var connection = await Factory(RoleUri(BusRole.Edge)).CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync(new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true));
        await channel.ExchangeDeclareAsync(ExpertLaneQueues.Exchange, ExchangeType.Direct, durable: true);
        var queue = ExpertLaneQueues.Batches(TestServices.UniqueName("edge-lane").Replace('_', '-'));
        await channel.QueueDeclareAsync(queue, durable: false, exclusive: false, autoDelete: false);
        try
        {
            await channel.QueueBindAsync(queue, ExpertLaneQueues.Exchange, queue);
            await channel.BasicPublishAsync(ExpertLaneQueues.Exchange, queue, mandatory: false, new BasicProperties { UserId = BusRoles.UserOf(BusRole.Edge) }, Encoding.UTF8.GetBytes("batch"));

            var delivered = await channel.BasicGetAsync(queue, autoAck: true);
            for (var attempt = 0; attempt < 50 && delivered is null; attempt++)
            {
                await Task.Delay(100);
                delivered = await channel.BasicGetAsync(queue, autoAck: true);
            }

            Assert.Equal("batch", delivered is null ? null : Encoding.UTF8.GetString(delivered.Body.Span));
        }
        finally
        {
            await channel.QueueDeleteAsync(queue);
        }
    }

    [Fact]
    public async Task The_client_user_sends_a_request_to_an_edge_queue_through_MassTransit()
    {
        var edge = TestServices.UniqueName("edge-permissions").Replace('_', '-');
        await using var provider = new ServiceCollection()
            .AddMassTransit(bus => bus.UsingRabbitMq((_, cfg) => new RabbitMqOptions { ConnectionString = RoleUri(BusRole.Client) }.ConfigureHost(cfg)))
            .BuildServiceProvider(true);
        var bus = provider.GetRequiredService<IBusControl>();
        await using var connection = await Factory(RoleUri(BusRole.Admin)).CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync();

        // The edge's side, as its receive endpoint declares it: the quorum queue and its exchange, bound.
        await channel.QueueDeclareAsync(edge, durable: true, exclusive: false, autoDelete: false, new Dictionary<string, object?> { ["x-queue-type"] = "quorum" });
        await channel.ExchangeDeclareAsync(edge, ExchangeType.Fanout, durable: true);
        await channel.QueueBindAsync(edge, edge, "");
        await bus.StartAsync(new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token);
        try
        {
            var endpoint = await bus.GetSendEndpoint(EdgeQueues.RequestsAddress(edge));
            await endpoint.Send(new GenerateText { RequestId = NewId.NextGuid(), Prompt = "permissions", MaxNewTokens = 1 });

            var queued = await channel.QueueDeclarePassiveAsync(edge);
            for (var attempt = 0; attempt < 50 && queued.MessageCount == 0; attempt++)
            {
                await Task.Delay(100);
                queued = await channel.QueueDeclarePassiveAsync(edge);
            }

            Assert.Equal(1u, queued.MessageCount);
        }
        finally
        {
            await bus.StopAsync();
            await channel.QueueDeleteAsync(edge);
            await channel.ExchangeDeleteAsync(edge);
        }
    }

    [Theory]
    [InlineData(BusRole.Edge, "edge-poison")]
    [InlineData(BusRole.Coordinator, "coordinator-poison")]
    public async Task A_body_that_is_no_message_goes_to_the_error_queue_and_the_role_keeps_consuming(BusRole role, string prefix)
    {
        var queue = prefix + "-" + new string(Guid.NewGuid().ToString("N").Where(char.IsAsciiLetter).Take(8).ToArray());
        var served = new TaskCompletionSource<GenerateText>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var connection = await Factory(RoleUri(BusRole.Admin)).CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync();
        try
        {
            await using (await TestBus.StartAsync(RoleUri(role), cfg => cfg.ReceiveEndpoint(queue, e =>
                e.Handler<GenerateText>(context => Task.FromResult(served.TrySetResult(context.Message))))))
            {
                var envelope = new BasicProperties { ContentType = "application/vnd.masstransit+json" };
                await channel.BasicPublishAsync("", queue, false, envelope, "{ not json"u8.ToArray());
                var id = NewId.NextGuid();
                await channel.BasicPublishAsync("", queue, false, envelope, Encoding.UTF8.GetBytes(
                    $$$"""{"messageId":"{{{NewId.NextGuid()}}}","messageType":["urn:message:DanceMoE.Contracts:GenerateText"],"message":{"requestId":"{{{id}}}","prompt":"after","maxNewTokens":1}}"""));

                Assert.Equal(id, (await served.Task.WaitAsync(TimeSpan.FromSeconds(30))).RequestId);
                Assert.Equal(1u, await ErrorQueueMessagesAsync(connection, queue + "_error"));
            }
        }
        finally
        {
            await using var cleanup = await connection.CreateChannelAsync();
            foreach (var name in new[] { queue, queue + "_error" })
            {
                await cleanup.QueueDeleteAsync(name);
                await cleanup.ExchangeDeleteAsync(name);
            }
        }
    }

    // The bad body is moved aside while the good one is served: wait for its queue (asking after a missing queue closes the channel).
    private static async Task<uint> ErrorQueueMessagesAsync(IConnection connection, string queue)
    {
        for (var attempt = 0; ; attempt++)
        {
            await using var channel = await connection.CreateChannelAsync();
            try
            {
                var declared = await channel.QueueDeclarePassiveAsync(queue);
                if (declared.MessageCount > 0 || attempt >= 100)
                {
                    return declared.MessageCount;
                }
            }
            catch (RabbitMQ.Client.Exceptions.OperationInterruptedException) when (attempt < 100)
            {
            }

            await Task.Delay(300);
        }
    }

    [Fact]
    public async Task The_client_user_may_neither_copy_an_edges_requests_nor_read_its_queue()
    {
        var edge = TestServices.UniqueName("edge-copied").Replace('_', '-');
        var copy = TestServices.UniqueName("edge-copy").Replace('_', '-');
        await using var admin = await Factory(RoleUri(BusRole.Admin)).CreateConnectionAsync();
        await using var setup = await admin.CreateChannelAsync();
        await setup.QueueDeclareAsync(edge, durable: false, exclusive: false, autoDelete: false);
        await setup.ExchangeDeclareAsync(edge, ExchangeType.Fanout, durable: false);
        await setup.QueueBindAsync(edge, edge, "");
        try
        {
            await using var client = await Factory(RoleUri(BusRole.Client)).CreateConnectionAsync();
            await using (var channel = await client.CreateChannelAsync())
            {
                await channel.QueueDeclareAsync(copy, durable: false, exclusive: false, autoDelete: true);
                var bind = await Assert.ThrowsAsync<RabbitMQ.Client.Exceptions.OperationInterruptedException>(() => channel.QueueBindAsync(copy, edge, ""));
                Assert.Equal<ushort?>(403, bind.ShutdownReason?.ReplyCode);
            }

            await using (var channel = await client.CreateChannelAsync())
            {
                var consume = await Assert.ThrowsAsync<RabbitMQ.Client.Exceptions.OperationInterruptedException>(() =>
                    channel.BasicGetAsync(edge, autoAck: true));
                Assert.Equal<ushort?>(403, consume.ShutdownReason?.ReplyCode);
            }
        }
        finally
        {
            await setup.QueueDeleteAsync(copy);
            await setup.QueueDeleteAsync(edge);
            await setup.ExchangeDeleteAsync(edge);
        }
    }

    [Fact]
    public async Task Only_the_ops_user_reads_the_management_API()
    {
        Assert.Equal(HttpStatusCode.OK, await GetNodesAsync(BusRole.Ops));
        Assert.Equal(HttpStatusCode.Unauthorized, await GetNodesAsync(BusRole.Client));
        Assert.Equal(HttpStatusCode.Unauthorized, await GetNodesAsync(BusRole.Edge));
        Assert.Equal(HttpStatusCode.Unauthorized, await GetNodesAsync(BusRole.Coordinator));
    }

    /// <summary>The role's user on the local services' application virtual host (its password from <c>services up</c>).</summary>
    [Fact]
    public async Task The_client_user_gets_an_edge_answer_through_a_request_channel()
    {
        // The channel's response endpoint is a queue the client declares and reads: named as the bus's own is, or refused.
        var edge = TestServices.UniqueName("edge-answers").Replace('_', '-');
        await using var edgeBus = await TestBus.StartAsync(RoleUri(BusRole.Admin), cfg => cfg.ReceiveEndpoint(edge, e =>
        {
            e.UseQuorumQueue();
            e.Handler<GenerateText>(context => context.RespondAsync(new TextGenerated { RequestId = context.Message.RequestId, EdgeId = edge, Stats = new GenerationStats() }));
        }));
        await using var client = await BusClient.StartAsync(RoleUri(BusRole.Client), CancellationToken.None);
        try
        {
            var id = NewId.NextGuid();
            using var giveUp = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            var answer = await client.Requests.GetResponse<GenerateText, TextGenerated>(
                EdgeQueues.RequestsAddress(edge), new GenerateText { RequestId = id, Prompt = "permissions", MaxNewTokens = 1 }, RequestTimeout.After(s: 30), giveUp.Token);

            Assert.Equal(id, answer.Message.RequestId);
        }
        finally
        {
            await BusClient.DeleteQueueAsync(RoleUri(BusRole.Admin), edge, CancellationToken.None);
        }
    }

    private static async Task<uint> QueueLengthAsync(string queue)
    {
        await using var connection = await Factory(RoleUri(BusRole.Admin)).CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync();
        return await channel.MessageCountAsync(queue);
    }

    private static RunPlacementNow RunNow() => new() { CommandId = NewId.NextGuid(), RequestedBy = "test", RequestedAt = DateTimeOffset.UtcNow };

    private static string RoleUri(BusRole role)
    {
        var broker = RabbitMqOptions.Parse(TestServices.RabbitMqUri);
        var password = File.ReadAllText(LocalEnvironment.RabbitMqPasswordFile(role)).Trim();
        return $"amqp://{BusRoles.UserOf(role)}:{Uri.EscapeDataString(password)}@{broker.Host}:{broker.Port}/dancemoe";
    }

    /// <summary>Publishes an empty message with publisher confirms: null when the broker confirms it, else the reply code that closed the channel.</summary>
    private static async Task<int?> PublishAsync(BusRole role, string exchange)
    {
        await using var connection = await Factory(RoleUri(role)).CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync(new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true));
        try
        {
            await channel.BasicPublishAsync(exchange, "", Encoding.UTF8.GetBytes("{}"));
        }
        catch (Exception ex) when (ex is RabbitMQ.Client.Exceptions.OperationInterruptedException or RabbitMQ.Client.Exceptions.PublishException)
        {
            return channel.CloseReason?.ReplyCode ?? (ex as RabbitMQ.Client.Exceptions.OperationInterruptedException)?.ShutdownReason?.ReplyCode;
        }

        return channel.CloseReason?.ReplyCode;
    }

    private static async Task<HttpStatusCode> GetNodesAsync(BusRole role)
    {
        var broker = RabbitMqOptions.Parse(RoleUri(role));
        using var client = new HttpClient { BaseAddress = new Uri(TestServices.ManagementUrl) };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue(
            "Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{broker.Username}:{broker.Password}")));
        using var response = await client.GetAsync(new Uri("api/nodes", UriKind.Relative));
        return response.StatusCode;
    }

    private static ConnectionFactory Factory(string uri) => RabbitMqOptions.Parse(uri).ConnectionFactory();
}
