using DanceMoE.Data;
using DanceMoE.Hosting;
using Microsoft.Extensions.Configuration;

namespace DanceMoE.Operations;

/// <summary>
/// This machine's set-up: environment variables (<c>ConnectionStrings__rabbitmq</c>, <c>ConnectionStrings__postgres</c>,
/// as in compose) over the local services' defaults, the repository root and the state folder.
/// </summary>
public static class LocalEnvironment
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
            : throw new OperationException("DANCEMOE_ROOT is not set: run this through the ./dancemoe wrapper");

    /// <summary>Models exported once, the local cluster's files, logs: <c>DANCEMOE_STATE</c>, else <c>/var/tmp/dancemoe</c>.</summary>
    public static string StateDirectory =>
        Environment.GetEnvironmentVariable("DANCEMOE_STATE") is { Length: > 0 } state ? state : "/var/tmp/dancemoe";

    /// <summary>The CLI (<c>dancemoe.dll</c>) that edge and coordinator processes are started from: it lies beside every front end's output.</summary>
    public static string CliAssemblyPath => Path.Combine(AppContext.BaseDirectory, "dancemoe.dll");

    /// <summary>The URL with its password hidden, for messages.</summary>
    public static string Redact(string url) =>
        Uri.TryCreate(url, UriKind.Absolute, out var uri) && uri.UserInfo.Contains(':', StringComparison.Ordinal)
            ? url.Replace(uri.UserInfo, uri.UserInfo.Split(':')[0] + ":***", StringComparison.Ordinal)
            : url;
}
