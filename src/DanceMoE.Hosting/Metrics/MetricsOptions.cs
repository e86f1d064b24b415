using System.ComponentModel.DataAnnotations;

namespace DanceMoE.Hosting.Metrics;

/// <summary>Where a process serves <c>/metrics</c>, <c>/healthz</c> and <c>/readyz</c> (section <c>Metrics</c>); no port: nowhere.</summary>
public sealed class MetricsOptions
{
    public const string Section = "Metrics";

    /// <summary>TCP port of the HTTP listener; null or 0: no listener.</summary>
    [Range(0, 65535)]
    public int? Port { get; set; }

    /// <summary>Address to listen on: an IP address or host name, or <c>*</c> for every interface.</summary>
    [Required]
    [RegularExpression(@"^(\*|[A-Za-z0-9.:\-]+)$", ErrorMessage = "Metrics:Host must be an address, a host name or *")]
    public string Host { get; set; } = "127.0.0.1";

    public bool Enabled => Port is > 0;

    /// <summary>The HttpListener prefixes, for example <c>http://127.0.0.1:9464/</c>.</summary>
    public IReadOnlyList<string> Prefixes()
    {
        // HttpListener matches the request's Host header against its prefixes: on loopback both names must match.
        string[] hosts = Host switch
        {
            "*" => ["+"],
            "127.0.0.1" or "localhost" => ["127.0.0.1", "localhost"],
            _ when Host.Contains(':', StringComparison.Ordinal) => [$"[{Host}]"],
            _ => [Host],
        };
        return [.. hosts.Select(h => FormattableString.Invariant($"http://{h}:{Port}/"))];
    }
}

/// <summary>Whether a process can do its work now; <c>/readyz</c> answers 200 or 503 with <see cref="Readiness.Reason"/>.</summary>
public interface IReadinessCheck
{
    Readiness Check();
}

public readonly record struct Readiness(bool Ready, string Reason)
{
    public static Readiness Yes(string reason = "ready") => new(true, reason);

    public static Readiness No(string reason) => new(false, reason);
}
