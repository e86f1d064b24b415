using Microsoft.Extensions.Configuration;

namespace DanceMoE.Cli;

/// <summary>The commands' view of <see cref="LocalEnvironment"/>: connection strings and the repository root.</summary>
public static class CliEnvironment
{
    public static IConfiguration Configuration => LocalEnvironment.Configuration;

    public static string PostgresUrl => LocalEnvironment.PostgresUrl;

    public static string RabbitMqUri => LocalEnvironment.RabbitMqUri;

    public static string OpsRabbitMqUri => LocalEnvironment.RabbitMqUriFor(Hosting.BusRole.Ops);

    /// <summary>The repository root, exported by the <c>./dancemoe</c> wrapper.</summary>
    public static string RepositoryRoot => LocalEnvironment.RepositoryRoot;
}
