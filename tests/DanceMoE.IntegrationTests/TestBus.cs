using DanceMoE.Hosting;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;

namespace DanceMoE.IntegrationTests;

/// <summary>A MassTransit bus on a test's broker, configured as the product's hosts configure theirs; disposing stops it.</summary>
internal sealed record TestBus(ServiceProvider Provider, IBusControl Bus) : IAsyncDisposable
{
    public static async Task<TestBus> StartAsync(string uri, Action<IRabbitMqBusFactoryConfigurator>? configure = null)
    {
        var provider = new ServiceCollection()
            .AddMassTransit(bus => bus.UsingRabbitMq((_, cfg) =>
            {
                new RabbitMqOptions { ConnectionString = uri }.ConfigureHost(cfg);
                configure?.Invoke(cfg);
            }))
            .BuildServiceProvider(true);
        var control = provider.GetRequiredService<IBusControl>();
        await control.StartAsync(new CancellationTokenSource(TimeSpan.FromSeconds(60)).Token);
        return new TestBus(provider, control);
    }

    public async ValueTask DisposeAsync()
    {
        await Bus.StopAsync(new CancellationTokenSource(TimeSpan.FromSeconds(15)).Token);
        await Provider.DisposeAsync();
    }
}
