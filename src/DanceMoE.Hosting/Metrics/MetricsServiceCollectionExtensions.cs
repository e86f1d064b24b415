using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace DanceMoE.Hosting.Metrics;

public static class MetricsServiceCollectionExtensions
{
    /// <summary>
    /// Binds <see cref="MetricsOptions"/> (validated at start) and registers the listener for <paramref name="meter"/>'s
    /// instruments; <typeparamref name="TReadiness"/> answers <c>/readyz</c>.
    /// </summary>
    public static IServiceCollection AddDanceMoEMetrics<TReadiness>(this IServiceCollection services, Func<IServiceProvider, Meter> meter)
        where TReadiness : class, IReadinessCheck
    {
        services.AddOptions<MetricsOptions>().BindConfiguration(MetricsOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        services.TryAddSingleton<TReadiness>();
        services.AddSingleton<IReadinessCheck>(sp => sp.GetRequiredService<TReadiness>());
        services.AddSingleton(meter);
        services.AddSingleton<MetricsServer>();
        services.AddHostedService(sp => sp.GetRequiredService<MetricsServer>());
        return services;
    }
}
