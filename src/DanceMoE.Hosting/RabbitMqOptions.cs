using System.ComponentModel.DataAnnotations;
using MassTransit;
using RabbitMQ.Client;

namespace DanceMoE.Hosting;

/// <summary>Where RabbitMQ is. Bound from <c>ConnectionStrings:rabbitmq</c> (the compose service name).</summary>
public sealed class RabbitMqOptions
{
    public const string ConnectionName = "rabbitmq";

    /// <summary>
    /// The local services' broker, with no credential: each role has a user of its own (see <c>./dancemoe services status</c>),
    /// which the local launchers give their processes; a host started without one is refused by the broker.
    /// </summary>
    public const string LocalDefault = "amqp://127.0.0.1:5682/dancemoe";

    /// <summary>
    /// An <c>amqp://user:password@host:port/vhost</c> URI; for a cluster, every node's <c>host:port</c> separated by commas
    /// (<c>amqp://user:password@h1:5672,h2:5672,h3:5672/vhost</c>): the bus's connection goes to the first node that answers
    /// (MassTransit keeps the order); those made with RabbitMQ's client directly (the expert lane, the probes) go to any node
    /// that answers (the client shuffles the list).
    /// </summary>
    [Required]
    public string ConnectionString { get; set; } = LocalDefault;

    /// <summary>
    /// The broker of <see cref="ConnectionString"/>; every message sent or published carries the connection's user as its
    /// AMQP <c>user_id</c>, which the broker checks, so a receiver knows who sent it (edges take control only from the coordinator).
    /// </summary>
    public void ConfigureHost(IRabbitMqBusFactoryConfigurator bus)
    {
        ArgumentNullException.ThrowIfNull(bus);
        var broker = Parse(ConnectionString);
        bus.Host(broker.Host, broker.Port, broker.VirtualHost, h =>
        {
            h.Username(broker.Username);
            h.Password(broker.Password);
            if (broker.Nodes.Count > 1)
            {
                h.UseCluster(c =>
                {
                    foreach (var node in broker.Nodes)
                    {
                        c.Node($"{node.Host}:{node.Port}");
                    }
                });
            }
        });
        bus.ConfigureSend(send => send.UseSendExecute(context =>
        {
            StampUser(context, broker.Username);
            ReturnUnroutableRequests(context);
            ConfirmOnlyWhatMustSurvive(context);
        }));
        bus.ConfigurePublish(publish => publish.UseExecute(context => StampUser(context, broker.Username)));
        bus.ConnectSendObserver(RejectedPublishRecovery.Observer());
    }

    /// <summary>The user the broker vouches for as the sender of a received message: its <c>user_id</c>; null when it has none.</summary>
    public static string? SenderOf(ConsumeContext context) => context is null ? null : SenderOf(context.ReceiveContext);

    /// <inheritdoc cref="SenderOf(ConsumeContext)"/>
    public static string? SenderOf(ReceiveContext context) =>
        context?.TryGetPayload(out RabbitMqBasicConsumeContext? basic) == true ? basic.Properties.UserId : null;

    private static void StampUser(SendContext context, string username)
    {
        if (context.TryGetPayload(out RabbitMqSendContext? rabbit))
        {
            rabbit.BasicProperties.UserId = username;
        }
    }

    /// <summary>
    /// A request to an edge's queue is published mandatory: while no edge has declared and bound the queue the broker
    /// returns it, and the send faults at once with <see cref="MessageReturnedException"/> rather than going nowhere.
    /// </summary>
    private static void ReturnUnroutableRequests(SendContext context)
    {
        if (context.DestinationAddress is { } destination && EdgeQueues.IsRequests(destination.Segments[^1].TrimEnd('/'))
            && context.TryGetPayload(out RabbitMqSendContext? rabbit))
        {
            rabbit.Mandatory = true;
        }
    }

    /// <summary>
    /// A message to a temporary queue (an expert batch, a reply to a requester) goes out without waiting for the broker's
    /// confirm: its sender's deadline or timeout covers its loss. A consumer that awaited such a confirm when its node died
    /// would never finish: RabbitMQ.Client fails a lost connection's pending confirms only after its consumers finished,
    /// and MassTransit would not reconnect meanwhile.
    /// </summary>
    private static void ConfirmOnlyWhatMustSurvive(SendContext context)
    {
        if (!AwaitsConfirm(context.DestinationAddress) && context.TryGetPayload(out RabbitMqSendContext? rabbit))
        {
            rabbit.AwaitAck = false;
        }
    }

    /// <summary>Whether a send to <paramref name="destination"/> waits for the broker's confirm: every one but to a temporary queue.</summary>
    public static bool AwaitsConfirm(Uri? destination) =>
        destination?.Query.Contains("temporary=true", StringComparison.OrdinalIgnoreCase) != true;

    public static RabbitMqBroker Parse(string uri)
    {
        ArgumentNullException.ThrowIfNull(uri);
        var schemeEnd = uri.IndexOf("://", StringComparison.Ordinal);
        if (schemeEnd > 0)
        {
            var authorityStart = schemeEnd + 3;
            var pathStart = uri.IndexOf('/', authorityStart);
            var authority = pathStart < 0 ? uri[authorityStart..] : uri[authorityStart..pathStart];
            var at = authority.LastIndexOf('@');
            var hosts = authority[(at + 1)..].Split(',');
            if (hosts.Length > 1)
            {
                var each = hosts.Select(host => ParseSingle(uri[..authorityStart] + authority[..(at + 1)] + host + (pathStart < 0 ? "" : uri[pathStart..]), uri)).ToList();
                return each[0] with { Nodes = [.. each.Select(b => b.Nodes[0])] };
            }
        }

        return ParseSingle(uri, uri);
    }

    /// <summary><paramref name="uri"/> with whatever stands between the user's name and the last '@' as ***, for messages.</summary>
    private static string WithoutPassword(string uri)
    {
        var start = uri.IndexOf("://", StringComparison.Ordinal) + 3;
        var at = uri.LastIndexOf('@');
        var colon = at > start ? uri.IndexOf(':', start, at - start) : -1;
        return colon < 0 ? uri : uri[..(colon + 1)] + "***" + uri[at..];
    }

    private static RabbitMqBroker ParseSingle(string uri, string given)
    {
        if (!Uri.TryCreate(uri, UriKind.Absolute, out var parsed) || parsed.Scheme is not ("amqp" or "rabbitmq") || string.IsNullOrEmpty(parsed.Host))
        {
            throw new FormatException($"'{WithoutPassword(given)}' is not an amqp://user:password@host:port/vhost URI (hosts of a cluster separated by commas)");
        }

        var userInfo = parsed.UserInfo.Split(':', 2);
        var vhost = Uri.UnescapeDataString(parsed.AbsolutePath.TrimStart('/'));
        var node = new RabbitMqNode(parsed.Host, (ushort)(parsed.IsDefaultPort || parsed.Port < 0 ? 5672 : parsed.Port));
        return new RabbitMqBroker(
            node.Host,
            node.Port,
            vhost.Length == 0 ? "/" : vhost,
            userInfo[0].Length == 0 ? "guest" : Uri.UnescapeDataString(userInfo[0]),
            userInfo.Length == 2 ? Uri.UnescapeDataString(userInfo[1]) : "guest")
        {
            Nodes = [node],
        };
    }
}

/// <summary>A broker: its first node (<see cref="Host"/>, <see cref="Port"/>) and, for a cluster, every node.</summary>
public sealed record RabbitMqBroker(string Host, ushort Port, string VirtualHost, string Username, string Password)
{
    /// <summary>Every node, the first first; one for a single broker.</summary>
    public IReadOnlyList<RabbitMqNode> Nodes { get; init; } = [new(Host, Port)];

    /// <summary>The nodes as RabbitMQ's client takes them: it connects to the first that answers.</summary>
    public IList<AmqpTcpEndpoint> Endpoints() => [.. Nodes.Select(n => new AmqpTcpEndpoint(n.Host, n.Port))];

    /// <summary>RabbitMQ's client factory for this broker's first node, virtual host and user.</summary>
    public ConnectionFactory ConnectionFactory(string? clientName = null) => new()
    {
        HostName = Host,
        Port = Port,
        VirtualHost = VirtualHost,
        UserName = Username,
        Password = Password,
        ClientProvidedName = clientName,
    };

    /// <summary>The URI of this broker's nodes and user on <paramref name="virtualHost"/>.</summary>
    public string UriFor(string virtualHost) =>
        $"amqp://{Uri.EscapeDataString(Username)}:{Uri.EscapeDataString(Password)}@{string.Join(',', Nodes.Select(n => $"{n.Host}:{n.Port}"))}/{Uri.EscapeDataString(virtualHost)}";
}

public sealed record RabbitMqNode(string Host, ushort Port);
