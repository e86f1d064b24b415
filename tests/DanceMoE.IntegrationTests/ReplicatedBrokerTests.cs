using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using DanceMoE.Contracts;
using DanceMoE.Hosting;
using MassTransit;

namespace DanceMoE.IntegrationTests;

/// <summary>A three-node RabbitMQ cluster of its own (scripts/services.sh on other ports), a queue declared as requests and control queues are.</summary>
public sealed class ReplicatedBrokerTests
{
    private const string Queue = "replicated-requests";

    [Fact]
    public async Task A_broker_node_killed_under_load_loses_no_message_the_broker_confirmed()
    {
        await using var cluster = await PrivateRabbitCluster.StartAsync(nodes: 3);
        var received = new ConcurrentDictionary<Guid, bool>();
        await using var consumer = await ConsumeAsync(cluster.Uri, Queue, received);
        await using var producer = await TestBus.StartAsync(cluster.Uri);
        var confirmed = new ConcurrentBag<Guid>();
        using var stop = new CancellationTokenSource();
        var load = Task.Run(async () =>
        {
            var endpoint = await producer.Bus.GetSendEndpoint(ReplicatedQueues.SendAddress(Queue));
            while (!stop.IsCancellationRequested)
            {
                var id = NewId.NextGuid();
                try
                {
                    // Returns once the broker confirmed the message: from then on it must not be lost.
                    using var attempt = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                    await endpoint.Send(new GenerateText { RequestId = id, Prompt = "kept" }, attempt.Token);
                    confirmed.Add(id);
                }
                catch (Exception ex) when (ex is MassTransitException or OperationCanceledException or RabbitMQ.Client.Exceptions.RabbitMQClientException)
                {
                    await Task.Delay(200);
                }
            }
        });

        await WaitUntilAsync(() => confirmed.Count >= 50, "50 messages confirmed before the kill");
        var beforeKill = confirmed.Count;
        await cluster.ServicesAsync("node", "kill", "1");
        await WaitUntilAsync(() => confirmed.Count >= beforeKill + 50, "50 more messages confirmed after node 1 was killed");
        await stop.CancelAsync();
        await load;

        await WaitUntilAsync(() => confirmed.All(received.ContainsKey), "every confirmed message consumed");
        Assert.Equal("quorum", await cluster.QueueTypeAsync(Queue));
        Assert.All(confirmed, id => Assert.True(received.ContainsKey(id), $"message {id} was confirmed by the broker but never consumed"));
    }

    /// <summary>
    /// A requester whose connection dies with node 1 reconnects at once and publishes while the queue's new leader is elected:
    /// RabbitMQ 3.10.8 then rejects every later publish of that channel to the queue (measured: the bus's own request client
    /// answered nothing for 30 s after the kill in 3 of 3 tries, while a new channel's requests were answered). Requests
    /// through a <see cref="RequestChannel"/> move to a new endpoint and are answered again.
    /// </summary>
    [Fact]
    public async Task Requests_through_a_request_channel_are_answered_again_after_the_node_leading_their_queue_is_killed()
    {
        const string queue = "edge-9-requests";
        await using var cluster = await PrivateRabbitCluster.StartAsync(nodes: 3);
        await using var edge = await TestBus.StartAsync(cluster.Uri, cfg => cfg.ReceiveEndpoint(queue, e =>
        {
            e.UseQuorumQueue();
            e.Handler<GenerateText>(context => context.RespondAsync(new TextGenerated { RequestId = context.Message.RequestId, EdgeId = "edge-9", Stats = new GenerationStats() }));
        }));
        await using var requester = await TestBus.StartAsync(cluster.Uri);
        await using var requests = new RequestChannel(requester.Bus);
        var answeredAt = new ConcurrentBag<DateTime>();
        var inFlight = 0;
        using var stop = new CancellationTokenSource();
        var load = Task.Run(async () =>
        {
            // Requests keep going out while the node dies, so that one is published during the election.
            while (!stop.IsCancellationRequested)
            {
                if (Volatile.Read(ref inFlight) < 100)
                {
                    Interlocked.Increment(ref inFlight);
                    _ = Task.Run(async () =>
                    {
                        try
                        {
                            using var attempt = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                            await requests.GetResponse<GenerateText, TextGenerated>(
                                ReplicatedQueues.SendAddress(queue), new GenerateText { RequestId = NewId.NextGuid(), Prompt = "x" }, RequestTimeout.After(s: 5), attempt.Token);
                            answeredAt.Add(DateTime.UtcNow);
                        }
                        catch (Exception ex) when (ex is MassTransitException or OperationCanceledException or RabbitMQ.Client.Exceptions.RabbitMQClientException)
                        {
                            // Lost with the node or rejected: the load goes on.
                        }
                        finally
                        {
                            Interlocked.Decrement(ref inFlight);
                        }
                    });
                }

                await Task.Delay(10);
            }
        });

        await WaitUntilAsync(() => answeredAt.Count >= 50, "50 requests answered before the kill");
        await cluster.ServicesAsync("node", "kill", "1");
        var killedAt = DateTime.UtcNow;
        await WaitUntilAsync(() => answeredAt.Count(t => t > killedAt) >= 200, "200 requests answered after node 1 was killed");
        await stop.CancelAsync();
        await load;
    }

    /// <summary>
    /// A consumer on node 2 that starts forwarding to a quorum queue led by node 1 as node 1 is killed (as the saga sends an
    /// edge its commands) publishes there while the queue's new leader is elected; the broker then rejects every later
    /// publish of that channel to the queue. <see cref="RejectedPublishRecovery"/> closes the channel, and the forwarding
    /// resumes on a new one.
    /// </summary>
    [Fact]
    public async Task A_consumer_whose_forwards_the_broker_rejects_after_a_node_kill_forwards_again_on_a_new_channel()
    {
        const string forwarder = "replicated-forwarder";
        const string target = "edge-8-control";
        await using var cluster = await PrivateRabbitCluster.StartAsync(nodes: 3);
        var forwarded = new ConcurrentDictionary<Guid, bool>();
        await using var edge = await TestBus.StartAsync(cluster.Uri, cfg => cfg.ReceiveEndpoint(target, e =>
        {
            e.UseQuorumQueue();
            e.Handler<GenerateText>(context =>
            {
                forwarded.TryAdd(context.Message.RequestId, true);
                return Task.CompletedTask;
            });
        }));
        var broker = RabbitMqOptions.Parse(cluster.Uri);
        var secondNode = broker.Nodes[1];
        var forwarding = false;
        await using var coordinator = await TestBus.StartAsync((broker with { Host = secondNode.Host, Port = secondNode.Port, Nodes = [secondNode] }).UriFor(broker.VirtualHost), cfg =>
            cfg.ReceiveEndpoint(forwarder, e =>
            {
                e.UseQuorumQueue();
                e.Handler<GenerateText>(async context =>
                {
                    if (Volatile.Read(ref forwarding))
                    {
                        var endpoint = await context.GetSendEndpoint(ReplicatedQueues.SendAddress(target));
                        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                        await endpoint.Send(context.Message, deadline.Token);
                    }
                });
            }));
        await using var producer = await TestBus.StartAsync(cluster.Uri);
        await using var requests = new RequestChannel(producer.Bus);
        var sent = 0;
        using var stop = new CancellationTokenSource();
        var load = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    using var attempt = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                    await requests.SendAsync(ReplicatedQueues.SendAddress(forwarder), new GenerateText { RequestId = NewId.NextGuid(), Prompt = "forward me" }, attempt.Token);
                    Interlocked.Increment(ref sent);
                }
                catch (Exception ex) when (ex is MassTransitException or OperationCanceledException or RabbitMQ.Client.Exceptions.RabbitMQClientException)
                {
                    await Task.Delay(100);
                }

                await Task.Delay(5);
            }
        });

        await WaitUntilAsync(() => Volatile.Read(ref sent) >= 50, "50 messages sent to the forwarder before the kill");
        Volatile.Write(ref forwarding, true);
        await cluster.ServicesAsync("node", "kill", "1");
        await WaitUntilAsync(() => forwarded.Count >= 200, "200 messages forwarded after node 1 was killed");
        await stop.CancelAsync();
        await load;
    }

    /// <summary>
    /// RabbitMQ.Client tells a lost connection's channels that it died one after another, each once its deliveries returned:
    /// a consumer still running on the first channel keeps the bus's other endpoints on the dead node. A consumer that stops
    /// when its delivery's token is cancelled (as the edge's request consumer does) lets them all move to a live node, and
    /// the broker delivers its message again.
    /// </summary>
    [Fact]
    public async Task A_consumer_that_stops_with_its_cancelled_delivery_lets_the_other_endpoints_fail_over_when_their_node_is_killed()
    {
        const string slowQueue = "replicated-slow-requests";
        const string otherQueue = "replicated-other";
        await using var cluster = await PrivateRabbitCluster.StartAsync(nodes: 3);
        var slowStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var slowServed = new ConcurrentBag<bool>();
        var otherReceived = new ConcurrentBag<Guid>();
        await using var consumer = await TestBus.StartAsync(cluster.Uri, cfg =>
        {
            cfg.ReceiveEndpoint(slowQueue, e =>
            {
                e.UseQuorumQueue();
                e.Handler<GenerateText>(async context =>
                {
                    if (!context.ReceiveContext.Redelivered)
                    {
                        slowStarted.TrySetResult();
                        await Task.Delay(Timeout.InfiniteTimeSpan, context.CancellationToken);
                    }

                    slowServed.Add(context.ReceiveContext.Redelivered);
                });
            });
            cfg.ReceiveEndpoint(otherQueue, e =>
            {
                e.UseQuorumQueue();
                e.Handler<GenerateText>(context =>
                {
                    otherReceived.Add(context.Message.RequestId);
                    return Task.CompletedTask;
                });
            });
        });
        await using var producer = await TestBus.StartAsync(cluster.Uri);
        var slow = await producer.Bus.GetSendEndpoint(ReplicatedQueues.SendAddress(slowQueue));
        await slow.Send(new GenerateText { RequestId = NewId.NextGuid(), Prompt = "slow" });
        await slowStarted.Task.WaitAsync(TimeSpan.FromSeconds(60));

        await cluster.ServicesAsync("node", "kill", "1");
        var other = await producer.Bus.GetSendEndpoint(ReplicatedQueues.SendAddress(otherQueue));
        var deadline = DateTime.UtcNow.AddSeconds(90);
        while (otherReceived.IsEmpty)
        {
            Assert.True(DateTime.UtcNow < deadline, $"the other endpoint consumed nothing for 90 s after node 1 was killed");
            try
            {
                using var attempt = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                await other.Send(new GenerateText { RequestId = NewId.NextGuid(), Prompt = "other" }, attempt.Token);
            }
            catch (Exception ex) when (ex is MassTransitException or OperationCanceledException or RabbitMQ.Client.Exceptions.RabbitMQClientException)
            {
                // The producer fails over too.
            }

            await Task.Delay(500);
        }

        await WaitUntilAsync(() => !slowServed.IsEmpty, "the slow message delivered again and served");
        Assert.Equal([true], slowServed);
    }

    /// <summary>
    /// A queue declared on one node gets a member on each node `services up --rabbitmq-nodes 3` adds; after `down`, going
    /// back to one node takes the others out of the cluster (started alone, node 1 would wait for them and its queues
    /// would have no majority), and every message the broker confirmed is still there to consume.
    /// </summary>
    [Fact]
    public async Task A_cluster_that_grows_replicates_its_queues_and_one_that_shrinks_keeps_their_messages()
    {
        const string queue = "replicated-resized";
        await using var cluster = await PrivateRabbitCluster.StartAsync(nodes: 1);
        await using (await TestBus.StartAsync(cluster.Uri, cfg => cfg.ReceiveEndpoint(queue, e =>
        {
            e.UseQuorumQueue();
            e.Handler<GenerateText>(_ => throw new InvalidOperationException("no message is consumed before the cluster is resized"));
        })))
        {
        }

        var sent = new List<Guid>();
        await using (var producer = await TestBus.StartAsync(cluster.Uri))
        {
            var endpoint = await producer.Bus.GetSendEndpoint(ReplicatedQueues.SendAddress(queue));
            for (var i = 0; i < 20; i++)
            {
                var id = NewId.NextGuid();
                await endpoint.Send(new GenerateText { RequestId = id, Prompt = "kept" });
                sent.Add(id);
            }
        }

        Assert.Equal(["dancemoe@localhost"], await cluster.QueueMembersAsync(queue, expected: 1));
        await cluster.ServicesAsync("up", "--rabbitmq-nodes", "3", "--rabbitmq-only");
        Assert.Equal(["dancemoe2@localhost", "dancemoe3@localhost", "dancemoe@localhost"], await cluster.QueueMembersAsync(queue, expected: 3));

        await cluster.ServicesAsync("down");
        await cluster.ServicesAsync("up", "--rabbitmq-nodes", "1", "--rabbitmq-only");
        Assert.Equal(["dancemoe@localhost"], await cluster.QueueMembersAsync(queue, expected: 1));
        var status = await cluster.StatusJsonAsync();
        Assert.Equal(1, JsonDocument.Parse(status).RootElement.GetProperty("rabbitmq_nodes").GetArrayLength());

        var received = new ConcurrentDictionary<Guid, bool>();
        await using var consumer = await ConsumeAsync(cluster.Uri, queue, received);
        await WaitUntilAsync(() => sent.All(received.ContainsKey), "every message sent before the resizing consumed");
        Assert.Equal(sent.Order(), received.Keys.Order());
    }

    [Fact]
    public async Task Two_services_ups_at_once_on_a_new_state_folder_both_succeed_and_leave_one_working_broker()
    {
        // Without the script's lock the second failed halfway, adding a broker user the first had just added.
        await using var cluster = await PrivateRabbitCluster.StartAsync(nodes: 1, ups: 2);
        Assert.Equal(1, JsonDocument.Parse(await cluster.StatusJsonAsync()).RootElement.GetProperty("rabbitmq_nodes").GetArrayLength());

        var received = new ConcurrentDictionary<Guid, bool>();
        await using var consumer = await ConsumeAsync(cluster.Uri, Queue, received);
        await using var producer = await TestBus.StartAsync(cluster.Uri);
        var id = NewId.NextGuid();
        await (await producer.Bus.GetSendEndpoint(ReplicatedQueues.SendAddress(Queue))).Send(new GenerateText { RequestId = id, Prompt = "after two ups" });
        await WaitUntilAsync(() => received.ContainsKey(id), "the message sent after two ups consumed");
    }

    [Fact]
    public async Task A_later_up_sets_the_broker_users_again_only_when_they_changed_on_the_broker()
    {
        await using var cluster = await PrivateRabbitCluster.StartAsync(nodes: 1);
        var vhost = Uri.EscapeDataString(RabbitMqOptions.Parse(cluster.Uri).VirtualHost);
        var clientPermissions = $"api/permissions/{vhost}/{BusRoles.UserOf(BusRole.Client)}";
        var (_, granted) = await cluster.ManagementAsync(HttpMethod.Get, clientPermissions);
        Assert.Contains("as the last setup left them", await cluster.UpLogAsync(), StringComparison.Ordinal);

        // What someone with the administrator's password might do by hand: the client may touch everything, guest is back.
        await cluster.ManagementAsync(HttpMethod.Put, clientPermissions, """{"configure":".*","write":".*","read":".*"}""");
        await cluster.ManagementAsync(HttpMethod.Put, "api/users/guest", """{"password":"guest","tags":"administrator"}""");
        Assert.Contains("changed since the last setup", await cluster.UpLogAsync(), StringComparison.Ordinal);

        Assert.Equal(granted, (await cluster.ManagementAsync(HttpMethod.Get, clientPermissions)).Body);
        Assert.Equal(HttpStatusCode.NotFound, (await cluster.ManagementAsync(HttpMethod.Get, "api/users/guest")).Status);
        Assert.Contains("as the last setup left them", await cluster.UpLogAsync(), StringComparison.Ordinal);
    }

    /// <summary>A bus consuming the quorum queue, recording each request id it receives.</summary>
    private static Task<TestBus> ConsumeAsync(string uri, string queue, ConcurrentDictionary<Guid, bool> received) =>
        TestBus.StartAsync(uri, cfg => cfg.ReceiveEndpoint(queue, e =>
        {
            e.UseQuorumQueue();
            e.Handler<GenerateText>(context =>
            {
                received[context.Message.RequestId] = true;
                return Task.CompletedTask;
            });
        }));

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting until {what}");
            await Task.Delay(100);
        }
    }
}

/// <summary>RabbitMQ nodes started by scripts/services.sh with a state folder and ports of their own; stopped and deleted on dispose.</summary>
public sealed class PrivateRabbitCluster : IAsyncDisposable
{
    private const int AmqpPort = 5982;
    private const int ManagementPort = 15982;
    private readonly string _state = Path.Combine("/var/tmp", $"dancemoe-test-cluster-{Guid.NewGuid():N}"[..36]);

    private PrivateRabbitCluster()
    {
    }

    public string Uri { get; private set; } = "";

    /// <summary>Starts the nodes with <paramref name="ups"/> `services up` run at once on the new state folder, each of which must succeed.</summary>
    public static async Task<PrivateRabbitCluster> StartAsync(int nodes, int ups = 1)
    {
        var cluster = new PrivateRabbitCluster();
        try
        {
            var up = new[] { "up", "--rabbitmq-nodes", nodes.ToString(System.Globalization.CultureInfo.InvariantCulture), "--rabbitmq-only" };
            await Task.WhenAll(Enumerable.Range(0, ups).Select(_ => cluster.ServicesAsync(up)));
            // Every node's host:port from status; the admin role's user, which may declare and consume any queue.
            var status = await cluster.StatusJsonAsync();
            var broker = RabbitMqOptions.Parse(JsonDocument.Parse(status).RootElement.GetProperty("rabbitmq_uri").GetString()!);
            var password = (await File.ReadAllTextAsync(Path.Combine(cluster._state, "rabbitmq", "users", "admin.password"))).Trim();
            cluster.Uri = (broker with { Username = BusRoles.UserOf(BusRole.Admin), Password = password }).UriFor(broker.VirtualHost);
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }
    }

    public async Task<string> ServicesAsync(params string[] arguments) => (await RunServicesAsync(false, arguments)).Output;

    /// <summary>`services status --json`, which exits 1 here: this broker has no PostgreSQL.</summary>
    public async Task<string> StatusJsonAsync() => (await RunServicesAsync(allowFailure: true, "status", "--json")).Output;

    /// <summary>What `services up` of this one-node broker logs.</summary>
    public async Task<string> UpLogAsync() => (await RunServicesAsync(false, "up", "--rabbitmq-nodes", "1", "--rabbitmq-only")).Errors;

    /// <summary>A call of node 1's management API as the administrator role.</summary>
    public async Task<(HttpStatusCode Status, string Body)> ManagementAsync(HttpMethod method, string path, string? json = null)
    {
        using var client = ManagementClient(ManagementPort);
        using var request = new HttpRequestMessage(method, new Uri(path, UriKind.Relative));
        if (json is not null)
        {
            request.Content = new StringContent(json, Encoding.UTF8, "application/json");
        }

        using var response = await client.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode || response.StatusCode == HttpStatusCode.NotFound, $"{method} {path}: {(int)response.StatusCode} {body}");
        return (response.StatusCode, body);
    }

    public async Task<string> QueueTypeAsync(string queue)
    {
        var broker = RabbitMqOptions.Parse(Uri);
        using var client = ManagementClient(ManagementPort + 1);
        var json = await client.GetStringAsync(new Uri($"api/queues/{System.Uri.EscapeDataString(broker.VirtualHost)}/{queue}", UriKind.Relative));
        return JsonDocument.Parse(json).RootElement.GetProperty("type").GetString()!;
    }

    /// <summary>The nodes holding a member of the quorum queue, sorted, once there are <paramref name="expected"/> (the management API's figures lag a few seconds).</summary>
    public async Task<string[]> QueueMembersAsync(string queue, int expected)
    {
        var broker = RabbitMqOptions.Parse(Uri);
        using var client = ManagementClient(ManagementPort);
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (true)
        {
            var json = await client.GetStringAsync(new Uri($"api/queues/{System.Uri.EscapeDataString(broker.VirtualHost)}/{queue}", UriKind.Relative));
            var members = JsonDocument.Parse(json).RootElement.TryGetProperty("members", out var list)
                ? list.EnumerateArray().Select(m => m.GetString()!).Order(StringComparer.Ordinal).ToArray()
                : [];
            if (members.Length == expected || DateTime.UtcNow > deadline)
            {
                return members;
            }

            await Task.Delay(500);
        }
    }

    /// <summary>An HTTP client of a node's management API, as the administrator role.</summary>
    private HttpClient ManagementClient(int port)
    {
        var broker = RabbitMqOptions.Parse(Uri);
        var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}/") };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{broker.Username}:{broker.Password}")));
        return client;
    }

    public async ValueTask DisposeAsync()
    {
        await RunServicesAsync(allowFailure: true, "down");
        if (Directory.Exists(_state))
        {
            Directory.Delete(_state, recursive: true);
        }
    }

    private async Task<(string Output, string Errors)> RunServicesAsync(bool allowFailure, params string[] arguments)
    {
        var start = new ProcessStartInfo(Path.Combine(RepositoryRoot(), "scripts", "services.sh"))
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        start.Environment["DANCEMOE_STATE"] = _state;
        start.Environment["DANCEMOE_AMQP_PORT"] = AmqpPort.ToString(System.Globalization.CultureInfo.InvariantCulture);
        start.Environment["DANCEMOE_RABBITMQ_MANAGEMENT_PORT"] = ManagementPort.ToString(System.Globalization.CultureInfo.InvariantCulture);
        start.Environment["DANCEMOE_EPMD_PORT"] = "4682";
        start.Environment["DANCEMOE_POSTGRES_PORT"] = "5742";
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var errors = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.True(allowFailure || process.ExitCode == 0, $"services {string.Join(' ', arguments)} exited {process.ExitCode}: {await errors}");
        return (await output, await errors);
    }

    private static string RepositoryRoot()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "scripts", "services.sh")))
            {
                return directory.FullName;
            }
        }

        throw new InvalidOperationException($"no scripts/services.sh above {AppContext.BaseDirectory}");
    }
}
