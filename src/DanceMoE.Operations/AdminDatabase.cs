using DanceMoE.Data;
using Microsoft.Extensions.Configuration;
using Npgsql;

namespace DanceMoE.Operations;

/// <summary>
/// The superuser connection for what the application role may not do (create and drop databases, create analysts'
/// logins): <c>ConnectionStrings__postgres_admin</c>, else user <c>postgres</c> on the application's server with the
/// password <c>./dancemoe services up</c> generated into <c>$DANCEMOE_STATE/postgres/admin.password</c>.
/// </summary>
public static class AdminDatabase
{
    public const string ConnectionName = "postgres_admin";

    /// <summary>The group role whose members read the analyst views and nothing else.</summary>
    public const string AnalystGroup = "dancemoe_analyst";

    public static string PasswordFile => Path.Combine(LocalEnvironment.StateDirectory, "postgres", "admin.password");

    /// <summary>The admin connection string for the server of <paramref name="postgresUrl"/>, on database <c>postgres</c>.</summary>
    public static string ConnectionString(string postgresUrl)
    {
        if (LocalEnvironment.Configuration.GetConnectionString(ConnectionName) is { Length: > 0 } configured)
        {
            return DatabaseOptions.ToNpgsql(configured);
        }

        string password;
        try
        {
            password = File.ReadAllText(PasswordFile).Trim();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new OperationException(
                $"no admin connection: set ConnectionStrings__{ConnectionName} or run ./dancemoe services up, which writes {PasswordFile} ({ex.Message})",
                OperationFailure.InvalidSettings,
                ex);
        }

        var server = new NpgsqlConnectionStringBuilder(DatabaseOptions.ToNpgsql(postgresUrl))
        {
            Username = "postgres",
            Password = password,
            Database = "postgres",
            Pooling = false,
        };
        return server.ConnectionString;
    }

    /// <summary>Creates database <paramref name="name"/> owned by the application role of <paramref name="postgresUrl"/>.</summary>
    public static async Task CreateDatabaseAsync(string postgresUrl, string name, CancellationToken cancellationToken)
    {
        var owner = new NpgsqlConnectionStringBuilder(DatabaseOptions.ToNpgsql(postgresUrl)).Username
            ?? throw new OperationException($"{LocalEnvironment.Redact(postgresUrl)} names no user to own database {name}", OperationFailure.InvalidSettings);
        await ExecuteAsync(postgresUrl, $"CREATE DATABASE {Quote(name)} OWNER {Quote(owner)}", cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Drops database <paramref name="name"/>, ending its sessions.</summary>
    public static Task DropDatabaseAsync(string postgresUrl, string name, CancellationToken cancellationToken) =>
        ExecuteAsync(postgresUrl, $"DROP DATABASE IF EXISTS {Quote(name)} WITH (FORCE)", cancellationToken);

    public const int MaxPasswordLength = 1024;

    /// <summary>A password kept in a file, without the line break an editor leaves at its end.</summary>
    public static string ReadPasswordFile(string file)
    {
        try
        {
            return File.ReadAllText(file).Trim();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new OperationException($"cannot read the password file {file} ({ex.Message})", OperationFailure.InvalidSettings, ex);
        }
    }

    /// <summary>
    /// Creates (or updates) the login <paramref name="name"/> in <see cref="AnalystGroup"/>: it reads the analyst views,
    /// with at most <paramref name="connectionLimit"/> sessions and statements cut at <paramref name="statementTimeout"/>.
    /// </summary>
    public static async Task CreateAnalystLoginAsync(
        string postgresUrl, string name, string password, int connectionLimit, TimeSpan statementTimeout, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(password);
        if (password.Any(char.IsControl) || password.Length > MaxPasswordLength)
        {
            throw new OperationException($"the password must be one line of at most {MaxPasswordLength} characters without control characters", OperationFailure.InvalidSettings);
        }

        await using var connection = new NpgsqlConnection(ConnectionString(postgresUrl));
        await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var exists = new NpgsqlCommand("SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles WHERE rolname = @name", connection);
        exists.Parameters.AddWithValue("name", name);
        var powerful = await exists.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false);
        if (powerful is true)
        {
            throw new OperationException($"role {name} exists with more than an analyst's rights: choose another name", OperationFailure.InvalidSettings);
        }

        var role = Quote(name);
        var verb = powerful is null ? "CREATE" : "ALTER";
        var timeout = $"{(long)statementTimeout.TotalMilliseconds}ms";
        await using var batch = new NpgsqlBatch(connection)
        {
            BatchCommands =
            {
                new NpgsqlBatchCommand("SET password_encryption = 'scram-sha-256'"),
                new NpgsqlBatchCommand($"{verb} ROLE {role} LOGIN CONNECTION LIMIT {connectionLimit} PASSWORD {QuoteLiteral(password)}"),
                new NpgsqlBatchCommand($"GRANT {AnalystGroup} TO {role}"),
                new NpgsqlBatchCommand($"ALTER ROLE {role} SET statement_timeout = {QuoteLiteral(timeout)}"),
                new NpgsqlBatchCommand($"ALTER ROLE {role} SET default_transaction_read_only = on"),
            },
        };
        await batch.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    private static async Task ExecuteAsync(string postgresUrl, string sql, CancellationToken cancellationToken)
    {
        await using var connection = new NpgsqlConnection(ConnectionString(postgresUrl));
        await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    private static string Quote(string identifier) => "\"" + identifier.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    private static string QuoteLiteral(string value) => "'" + value.Replace("'", "''", StringComparison.Ordinal) + "'";
}
