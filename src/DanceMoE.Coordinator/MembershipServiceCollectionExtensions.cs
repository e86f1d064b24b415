using Microsoft.Extensions.DependencyInjection;

namespace DanceMoE.Coordinator;

public static class MembershipServiceCollectionExtensions
{
    /// <summary>What <see cref="EdgeHeartbeatConsumer"/> needs besides the database: the membership and its options (section <c>Membership</c>).</summary>
    public static IServiceCollection AddClusterMembership(this IServiceCollection services)
    {
        services.AddOptions<MembershipOptions>().BindConfiguration(MembershipOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        services.AddSingleton<ClusterMembership>();
        return services;
    }
}
