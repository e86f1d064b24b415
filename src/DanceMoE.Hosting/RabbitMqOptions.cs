using System.ComponentModel.DataAnnotations;
using MassTransit;

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

    /// <summary>An <c>amqp://user:password@host:port/vhost</c> URI.</summary>
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
        });
        bus.ConfigureSend(send => send.UseSendExecute(context => StampUser(context, broker.Username)));
        bus.ConfigurePublish(publish => publish.UseExecute(context => StampUser(context, broker.Username)));
    }

    /// <summary>The user the broker vouches for as the sender of a received message: its <c>user_id</c>; null when it has none.</summary>
    public static string? SenderOf(ConsumeContext context) =>
        context?.ReceiveContext.TryGetPayload(out RabbitMqBasicConsumeContext? basic) == true ? basic.Properties.UserId : null;

    private static void StampUser(SendContext context, string username)
    {
        if (context.TryGetPayload(out RabbitMqSendContext? rabbit))
        {
            rabbit.BasicProperties.UserId = username;
        }
    }

    public static RabbitMqBroker Parse(string uri)
    {
        if (!Uri.TryCreate(uri, UriKind.Absolute, out var parsed) || parsed.Scheme is not ("amqp" or "rabbitmq") || string.IsNullOrEmpty(parsed.Host))
        {
            throw new FormatException($"'{uri}' is not an amqp://user:password@host:port/vhost URI");
        }

        var userInfo = parsed.UserInfo.Split(':', 2);
        var vhost = Uri.UnescapeDataString(parsed.AbsolutePath.TrimStart('/'));
        return new RabbitMqBroker(
            parsed.Host,
            (ushort)(parsed.IsDefaultPort || parsed.Port < 0 ? 5672 : parsed.Port),
            vhost.Length == 0 ? "/" : vhost,
            userInfo[0].Length == 0 ? "guest" : Uri.UnescapeDataString(userInfo[0]),
            userInfo.Length == 2 ? Uri.UnescapeDataString(userInfo[1]) : "guest");
    }
}

public sealed record RabbitMqBroker(string Host, ushort Port, string VirtualHost, string Username, string Password);
