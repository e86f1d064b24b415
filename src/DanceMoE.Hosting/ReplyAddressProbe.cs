using System.Collections.Concurrent;
using MassTransit;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace DanceMoE.Hosting;

/// <summary>
/// Declares a reply address's exchange (and queue) as MassTransit would, on a channel of its own, before a consumer
/// replies there. A reply is sent on the consumer's own channel, and a declaration the broker refuses (an exchange that
/// exists with other settings, a name the user may not configure) closes that channel with every message in flight on
/// it; here it closes only a throwaway channel.
/// </summary>
public sealed class ReplyAddressProbe(IOptions<RabbitMqOptions> options, ILogger<ReplyAddressProbe> logger) : IAsyncDisposable
{
    private const int MaxRemembered = 4096;

    private readonly ConcurrentDictionary<Uri, bool> _usable = new();
    private readonly SemaphoreSlim _connecting = new(1, 1);
    private IConnection? _connection;

    /// <summary>Null when MassTransit can reply to <paramref name="address"/>; otherwise why not, in one line.</summary>
    public async Task<string?> ProblemAsync(Uri address, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(address);
        if (_usable.ContainsKey(address))
        {
            return null;
        }

        RabbitMqEndpointAddress endpoint;
        try
        {
            endpoint = new RabbitMqEndpointAddress(new Uri("rabbitmq://localhost/"), address);
        }
        catch (Exception ex) when (ex is ArgumentException or FormatException or RabbitMqAddressException)
        {
            return $"'{address}' is not a RabbitMQ address: {ex.Message}";
        }

        if (endpoint.DelayedType is not null || endpoint.AlternateExchange is not null || endpoint.BindExchanges is not null)
        {
            return $"'{address}' asks for exchange options no reply needs";
        }

        var connection = await ConnectAsync(cancellationToken).ConfigureAwait(false);
        var channel = await connection.CreateChannelAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        await using (channel.ConfigureAwait(false))
        {
            try
            {
                await channel.ExchangeDeclareAsync(endpoint.Name, endpoint.ExchangeType, endpoint.Durable, endpoint.AutoDelete, cancellationToken: cancellationToken)
                    .ConfigureAwait(false);
                if (endpoint.BindToQueue)
                {
                    var queue = endpoint.QueueName ?? endpoint.Name;
                    await channel.QueueDeclareAsync(queue, endpoint.Durable, exclusive: false, endpoint.AutoDelete, cancellationToken: cancellationToken)
                        .ConfigureAwait(false);
                    await channel.QueueBindAsync(queue, endpoint.Name, "", cancellationToken: cancellationToken).ConfigureAwait(false);
                }
            }
            catch (OperationInterruptedException ex)
            {
                return $"the broker refuses '{address}': {ex.ShutdownReason?.ReplyText ?? ex.Message}";
            }
        }

        if (_usable.Count >= MaxRemembered)
        {
            _usable.Clear();
        }

        _usable[address] = true;
        return null;
    }

    private async Task<IConnection> ConnectAsync(CancellationToken cancellationToken)
    {
        if (_connection is { IsOpen: true } open)
        {
            return open;
        }

        await _connecting.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_connection is { IsOpen: true } opened)
            {
                return opened;
            }

            if (_connection is not null)
            {
                await _connection.DisposeAsync().ConfigureAwait(false);
            }

            var broker = RabbitMqOptions.Parse(options.Value.ConnectionString);
            var factory = broker.ConnectionFactory("dancemoe-reply-probe");
            _connection = await factory.CreateConnectionAsync(broker.Endpoints(), cancellationToken).ConfigureAwait(false);
            logger.LogDebug("reply address probe connected to {Host}:{Port}/{VirtualHost}", broker.Host, broker.Port, broker.VirtualHost);
            return _connection;
        }
        finally
        {
            _connecting.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_connection is not null)
        {
            await _connection.DisposeAsync().ConfigureAwait(false);
        }

        _connecting.Dispose();
    }
}
