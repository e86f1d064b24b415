using DanceMoE.Coordinator;
using DanceMoE.Edge;
using MassTransit;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace DanceMoE.IntegrationTests;

/// <summary>MassTransit 8.4+ reports bus and endpoint details to its vendor unless told not to; our processes never call out.</summary>
public sealed class UsageTelemetryTests
{
    private static readonly Dictionary<string, string?> Settings = new()
    {
        ["ConnectionStrings:rabbitmq"] = "amqp://dancemoe-edge:secret@127.0.0.1:5682/dancemoe",
        ["ConnectionStrings:postgres"] = "postgresql://dancemoe:secret@127.0.0.1:5442/dancemoe",
    };

    [Fact]
    public void The_edge_bus_reports_no_usage_telemetry()
    {
        var builder = Host.CreateEmptyApplicationBuilder(new HostApplicationBuilderSettings());
        builder.Configuration.AddInMemoryCollection(Settings);
        builder.AddEdgeServer();
        using var host = builder.Build();

        Assert.False(host.Services.GetRequiredService<IOptions<UsageTelemetryOptions>>().Value.Enabled);
    }

    [Fact]
    public void The_coordinator_bus_reports_no_usage_telemetry()
    {
        using var host = CoordinatorHost.Build(new ConfigurationBuilder().AddInMemoryCollection(Settings).Build());

        Assert.False(host.Services.GetRequiredService<IOptions<UsageTelemetryOptions>>().Value.Enabled);
    }
}
