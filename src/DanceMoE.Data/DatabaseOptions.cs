using System.ComponentModel.DataAnnotations;
using Npgsql;

namespace DanceMoE.Data;

/// <summary>Where PostgreSQL is. Bound from <c>ConnectionStrings:postgres</c> (the compose service name).</summary>
public sealed class DatabaseOptions
{
    public const string ConnectionName = "postgres";

    /// <summary>The local services' database (see <c>./dancemoe services status</c>).</summary>
    public const string LocalDefault = "postgresql://dancemoe:dancemoe@127.0.0.1:5442/dancemoe";

    /// <summary>A <c>postgresql://</c> URI or an Npgsql <c>Key=Value;</c> connection string.</summary>
    [Required]
    public string ConnectionString { get; set; } = LocalDefault;

    /// <summary>Converts a <c>postgresql://user:password@host:port/db</c> URI to an Npgsql connection string.</summary>
    public static string ToNpgsql(string urlOrConnectionString)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(urlOrConnectionString);
        if (!urlOrConnectionString.StartsWith("postgres://", StringComparison.OrdinalIgnoreCase)
            && !urlOrConnectionString.StartsWith("postgresql://", StringComparison.OrdinalIgnoreCase))
        {
            try
            {
                return new NpgsqlConnectionStringBuilder(urlOrConnectionString).ConnectionString;
            }
            catch (Exception ex) when (ex is ArgumentException or KeyNotFoundException or FormatException)
            {
                // The text may hold a password: the message names the problem, not the text.
                throw new FormatException(
                    "not a postgresql://user:password@host:port/db URI nor an Npgsql Key=Value; connection string" + (ex is ArgumentException ? $" ({ex.Message})" : ""), ex);
            }
        }

        if (!Uri.TryCreate(urlOrConnectionString, UriKind.Absolute, out var uri) || string.IsNullOrEmpty(uri.Host))
        {
            throw new FormatException("not a valid postgresql://user:password@host:port/db URI");
        }

        var builder = new NpgsqlConnectionStringBuilder
        {
            Host = uri.Host,
            Port = uri.IsDefaultPort || uri.Port < 0 ? 5432 : uri.Port,
            Database = Uri.UnescapeDataString(uri.AbsolutePath.TrimStart('/')),
        };
        var userInfo = uri.UserInfo.Split(':', 2);
        if (userInfo[0].Length > 0)
        {
            builder.Username = Uri.UnescapeDataString(userInfo[0]);
        }

        if (userInfo.Length == 2)
        {
            builder.Password = Uri.UnescapeDataString(userInfo[1]);
        }

        return builder.ConnectionString;
    }
}
