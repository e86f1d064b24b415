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
        Checked(Configuration.GetConnectionString(DatabaseOptions.ConnectionName), DatabaseOptions.ConnectionName, DatabaseOptions.ToNpgsql) is { Length: > 0 } configured
            ? configured
            : DatabaseOptions.LocalDefault.Replace(":5442/", $":{LocalPort("DANCEMOE_POSTGRES_PORT", "5442")}/", StringComparison.Ordinal);

    /// <summary>The client's broker URI: what front ends that send requests use (<see cref="RabbitMqUriFor"/>).</summary>
    public static string RabbitMqUri => RabbitMqUriFor(BusRole.Client);

    /// <summary>
    /// The broker URI a process of <paramref name="role"/> connects with: the role's own <c>ConnectionStrings__rabbitmq_ROLE</c>
    /// (<c>rabbitmq_ops</c>, <c>rabbitmq_admin</c>, ...), else <c>ConnectionStrings__rabbitmq</c> (one credential for every
    /// role but the admin, as an operator or a test gives it), else the local services' user of that role, with the
    /// password <c>./dancemoe services up</c> generated (readable by root only), on the same broker and virtual host.
    /// </summary>
    public static string RabbitMqUriFor(BusRole role)
    {
        var ownName = RabbitMqSettingOf(role);
        if (Checked(Configuration.GetConnectionString(ownName), ownName, RabbitMqOptions.Parse) is { Length: > 0 } own)
        {
            return own;
        }

        var configured = Checked(Configuration.GetConnectionString(RabbitMqOptions.ConnectionName), RabbitMqOptions.ConnectionName, RabbitMqOptions.Parse);
        if (role != BusRole.Admin && configured is { Length: > 0 })
        {
            return configured;
        }

        var broker = RabbitMqOptions.Parse(configured is { Length: > 0 } ? configured : LocalRabbitMqUri(LocalRabbitMq, LocalRabbitMqNodes));
        var password = ReadSecret(RabbitMqPasswordFile(role), $"ConnectionStrings__{ownName}");
        return (broker with { Username = BusRoles.UserOf(role), Password = password }).UriFor(broker.VirtualHost);
    }

    /// <summary>The connection strings a process of <paramref name="role"/> takes its broker user from, for a message that says which to check.</summary>
    public static string RabbitMqSettingsOf(BusRole role) => $"ConnectionStrings__{RabbitMqSettingOf(role)} or ConnectionStrings__{RabbitMqOptions.ConnectionName}";

    private static string RabbitMqSettingOf(BusRole role) => RabbitMqOptions.ConnectionName + "_" + role.ToString().ToLowerInvariant();

    /// <summary>The local services' RabbitMQ nodes: as many as the last <c>services up --rabbitmq-nodes N</c> started (1 before).</summary>
    public static int LocalRabbitMqNodes =>
        File.Exists(Path.Combine(StateDirectory, "rabbitmq", "nodes"))
        && int.TryParse(File.ReadAllText(Path.Combine(StateDirectory, "rabbitmq", "nodes")).Trim(), out var nodes) && nodes > 1
            ? nodes
            : 1;

    /// <summary><paramref name="uri"/> with its node's port and the <paramref name="nodes"/> - 1 ports above it, as the local services number their nodes.</summary>
    public static string LocalRabbitMqUri(string uri, int nodes)
    {
        if (nodes <= 1)
        {
            return uri;
        }

        var broker = RabbitMqOptions.Parse(uri);
        return (broker with { Nodes = [.. Enumerable.Range(0, nodes).Select(i => new RabbitMqNode(broker.Host, (ushort)(broker.Port + i)))] }).UriFor(broker.VirtualHost);
    }

    /// <summary>
    /// <paramref name="configuration"/>, with the local services (the user of <paramref name="role"/> on the broker, the
    /// database on <c>DANCEMOE_POSTGRES_PORT</c>) where it names none: an edge or a coordinator started on this machine.
    /// </summary>
    public static IConfiguration WithLocalServices(this IConfiguration configuration, BusRole role)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        Checked(configuration.GetConnectionString(RabbitMqOptions.ConnectionName), RabbitMqOptions.ConnectionName, RabbitMqOptions.Parse);
        Checked(configuration.GetConnectionString(DatabaseOptions.ConnectionName), DatabaseOptions.ConnectionName, DatabaseOptions.ToNpgsql);
        var local = new Dictionary<string, string?>(StringComparer.Ordinal);
        if (configuration.GetConnectionString(RabbitMqOptions.ConnectionName) is not { Length: > 0 })
        {
            local["ConnectionStrings:" + RabbitMqOptions.ConnectionName] = RabbitMqUriFor(role);
        }

        if (configuration.GetConnectionString(DatabaseOptions.ConnectionName) is not { Length: > 0 })
        {
            local["ConnectionStrings:" + DatabaseOptions.ConnectionName] = PostgresUrl;
        }

        return local.Count == 0 ? configuration : new ConfigurationBuilder().AddInMemoryCollection(local).AddConfiguration(configuration).Build();
    }

    /// <summary>The password file of a role's RabbitMQ user, written by <c>./dancemoe services up</c>.</summary>
    public static string RabbitMqPasswordFile(BusRole role) =>
        Path.Combine(StateDirectory, "rabbitmq", "users", role.ToString().ToLowerInvariant() + ".password");

    /// <summary><c>DANCEMOE_RABBITMQ_MANAGEMENT_URL</c>, else the local broker's management port (<c>DANCEMOE_RABBITMQ_MANAGEMENT_PORT</c>).</summary>
    public static string RabbitMqManagementUrl =>
        Environment.GetEnvironmentVariable("DANCEMOE_RABBITMQ_MANAGEMENT_URL") is { Length: > 0 } url
            ? url.TrimEnd('/') + "/"
            : $"http://{RabbitMqOptions.Parse(RabbitMqUriFor(BusRole.Admin)).Host}:{LocalPort("DANCEMOE_RABBITMQ_MANAGEMENT_PORT", "15682")}/";

    /// <summary>
    /// The port at which a local cluster's edge-1 serves /metrics unless told otherwise (edge-i at this + i - 1):
    /// <c>DANCEMOE_METRICS_PORT_BASE</c> when it is a number, else 9470; a services instance of one's own can take its own range with it.
    /// </summary>
    public static int MetricsPortBase =>
        int.TryParse(Environment.GetEnvironmentVariable("DANCEMOE_METRICS_PORT_BASE"), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var port)
            ? port
            : 9470;

    private static string LocalRabbitMq => $"amqp://127.0.0.1:{LocalPort("DANCEMOE_AMQP_PORT", "5682")}/dancemoe";

    /// <summary>The local services' port that <paramref name="variable"/> moves, else <paramref name="fallback"/>; a value that is no port is one line naming the variable.</summary>
    private static string LocalPort(string variable, string fallback) =>
        Environment.GetEnvironmentVariable(variable) is not { Length: > 0 } value
            ? fallback
            : int.TryParse(value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var port) && port is >= 1 and <= 65535
                ? port.ToString(System.Globalization.CultureInfo.InvariantCulture)
                : throw new OperationException($"{variable} '{value.ReplaceLineEndings(" ")}' is not a port (a whole number from 1 to 65535)", OperationFailure.InvalidSettings);

    /// <summary><paramref name="value"/> when <paramref name="parse"/> reads it; else one line naming the variable (the parsers' messages hide any password).</summary>
    private static string? Checked<T>(string? value, string name, Func<string, T> parse)
    {
        if (value is not { Length: > 0 })
        {
            return value;
        }

        try
        {
            _ = parse(value);
            return value;
        }
        catch (FormatException ex)
        {
            throw new OperationException($"ConnectionStrings__{name}: {ex.Message}", OperationFailure.InvalidSettings, ex);
        }
    }

    private static string ReadSecret(string file, string setting)
    {
        try
        {
            return File.ReadAllText(file).Trim();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new OperationException(
                $"no RabbitMQ credential: set {setting} or run ./dancemoe services up, which writes {file} ({ex.Message})",
                OperationFailure.InvalidSettings,
                ex);
        }
    }

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
        Uri.TryCreate(RabbitMqFirstNode(url), UriKind.Absolute, out var uri) && uri.UserInfo.Contains(':', StringComparison.Ordinal)
            ? url.Replace(uri.UserInfo, uri.UserInfo.Split(':')[0] + ":***", StringComparison.Ordinal)
            : url;

    /// <summary>An amqp URI of several nodes (h1:p1,h2:p2) with only its first node, which <see cref="Uri"/> can read.</summary>
    private static string RabbitMqFirstNode(string url)
    {
        var comma = url.IndexOf(',', StringComparison.Ordinal);
        var path = comma < 0 ? -1 : url.IndexOf('/', comma);
        return comma < 0 ? url : url[..comma] + (path < 0 ? "" : url[path..]);
    }
}
