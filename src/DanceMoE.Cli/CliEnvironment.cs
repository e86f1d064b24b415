using DanceMoE.Data;
using DanceMoE.Hosting;
using Microsoft.Extensions.Configuration;

namespace DanceMoE.Cli;

/// <summary>
/// Configuration every command shares: environment variables (<c>ConnectionStrings__rabbitmq</c>,
/// <c>ConnectionStrings__postgres</c>, as in compose) over the local services' defaults.
/// </summary>
public static class CliEnvironment
{
    public static IConfiguration Configuration { get; } = new ConfigurationBuilder().AddEnvironmentVariables().Build();

    public static string PostgresUrl =>
        Configuration.GetConnectionString(DatabaseOptions.ConnectionName) ?? DatabaseOptions.LocalDefault;

    public static string RabbitMqUri =>
        Configuration.GetConnectionString(RabbitMqOptions.ConnectionName) ?? RabbitMqOptions.LocalDefault;

    /// <summary>The repository root, exported by the <c>./dancemoe</c> wrapper.</summary>
    public static string RepositoryRoot =>
        Environment.GetEnvironmentVariable("DANCEMOE_ROOT") is { Length: > 0 } root
            ? root
            : throw new CliException("DANCEMOE_ROOT is not set: run this through the ./dancemoe wrapper");
}
