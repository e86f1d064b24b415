using DanceMoE.Hosting;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace DanceMoE.Operations;

/// <summary>A bus with no consumers, for front ends that send requests (infer, the demo, benchmarks).</summary>
public sealed class BusClient : IAsyncDisposable
{
    private readonly ServiceProvider _provider;
    private readonly Lazy<RequestChannel> _requests;

    private BusClient(ServiceProvider provider, IBusControl bus)
    {
        _provider = provider;
        Bus = bus;
        // Made when first used: it declares a response queue of its own, which a client that only publishes never needs.
        _requests = new Lazy<RequestChannel>(() => new RequestChannel(bus));
    }

    public IBusControl Bus { get; }

    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(30);

    /// <summary>Requests and commands to edges and the coordinator go here rather than through the bus's own endpoint (see <see cref="RequestChannel"/>).</summary>
    public RequestChannel Requests => _requests.Value;

    public static Task<BusClient> StartAsync(string rabbitMqUri, CancellationToken cancellationToken) => StartAsync(rabbitMqUri, null, cancellationToken);

    /// <summary>Starts a client bus; <paramref name="configure"/> adds to its configuration (a deserializer, say).</summary>
    public static async Task<BusClient> StartAsync(string rabbitMqUri, Action<IRabbitMqBusFactoryConfigurator>? configure, CancellationToken cancellationToken)
    {
        var provider = new ServiceCollection()
            .AddMassTransit(bus =>
            {
                bus.DisableUsageTelemetry();
                bus.UsingRabbitMq((_, cfg) =>
                {
                    new RabbitMqOptions { ConnectionString = rabbitMqUri }.ConfigureHost(cfg);
                    configure?.Invoke(cfg);
                });
            })
            .BuildServiceProvider(true);
        var bus = provider.GetRequiredService<IBusControl>();
        try
        {
            await BusStarter.StartAsync(bus, rabbitMqUri, doing: null, setting: null, StartTimeout, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await provider.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return new BusClient(provider, bus);
    }

    /// <summary>How many consumers a queue has; null when the queue does not exist (nobody ever served it).</summary>
    public static async Task<uint?> ConsumersOfAsync(string rabbitMqUri, string queue, CancellationToken cancellationToken)
    {
        var factory = Factory(rabbitMqUri);
        try
        {
            await using var connection = await factory.CreateConnectionAsync(RabbitMqOptions.Parse(rabbitMqUri).Endpoints(), cancellationToken).ConfigureAwait(false);
            await using var channel = await connection.CreateChannelAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
            var ok = await channel.QueueDeclarePassiveAsync(queue, cancellationToken).ConfigureAwait(false);
            return ok.ConsumerCount;
        }
        catch (OperationInterruptedException ex) when (ex.ShutdownReason?.ReplyCode == 404)
        {
            return null;
        }
        catch (BrokerUnreachableException ex)
        {
            throw BusStarter.Unreachable(rabbitMqUri, ex);
        }
    }

    /// <summary>Deletes a queue and its same-named exchange, as MassTransit declared them for an endpoint.</summary>
    public static async Task DeleteQueueAsync(string rabbitMqUri, string queue, CancellationToken cancellationToken)
    {
        await using var connection = await Factory(rabbitMqUri).CreateConnectionAsync(RabbitMqOptions.Parse(rabbitMqUri).Endpoints(), cancellationToken).ConfigureAwait(false);
        await using var channel = await connection.CreateChannelAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        await channel.QueueDeleteAsync(queue, ifUnused: false, ifEmpty: false, cancellationToken: cancellationToken).ConfigureAwait(false);
        await channel.ExchangeDeleteAsync(queue, ifUnused: false, cancellationToken: cancellationToken).ConfigureAwait(false);
    }

    private static ConnectionFactory Factory(string rabbitMqUri) => RabbitMqOptions.Parse(rabbitMqUri).ConnectionFactory();

    public async ValueTask DisposeAsync()
    {
        if (_requests.IsValueCreated)
        {
            await _requests.Value.DisposeAsync().ConfigureAwait(false);
        }

        await Bus.StopAsync(CancellationToken.None).ConfigureAwait(false);
        await _provider.DisposeAsync().ConfigureAwait(false);
    }
}
