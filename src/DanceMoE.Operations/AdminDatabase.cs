using DanceMoE.Data;
using DanceMoE.Model;
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

    /// <summary>
    /// A password kept in a file, without the line break an editor leaves at its end. Only a regular file is read, and
    /// only a little past the longest password: a FIFO would block until a writer came and /dev/zero never ends. Text
    /// that is not UTF-8 is refused, as decoding it would set a password other than the one in the file.
    /// </summary>
    public static string ReadPasswordFile(string file)
    {
        try
        {
            return ModelFiles.ReadText(file, MaxPasswordFileBytes, $"a password file (a password is one line of at most {MaxPasswordLength} characters)").Trim();
        }
        catch (ModelFormatException ex)
        {
            throw new OperationException($"cannot read the password file: {ex.Message}", OperationFailure.InvalidSettings, ex);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new OperationException($"cannot read the password file {file} ({ex.Message})", OperationFailure.InvalidSettings, ex);
        }
    }

    /// <summary>The longest password in UTF-8 (4 bytes a character at most), with room for a line break.</summary>
    private const int MaxPasswordFileBytes = (MaxPasswordLength * 4) + 2;

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

        if (name.StartsWith("pg_", StringComparison.Ordinal) || ReservedRoleNames.Contains(name))
        {
            throw new OperationException($"{name} is a role name PostgreSQL reserves: choose another name", OperationFailure.InvalidSettings);
        }

        await using var connection = new NpgsqlConnection(ConnectionString(postgresUrl));
        await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var exists = new NpgsqlCommand(OtherThanAnAnalystLogin, connection);
        exists.Parameters.AddWithValue("name", name);
        exists.Parameters.AddWithValue("analysts", AnalystGroup);
        var otherRole = await exists.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false);
        if (otherRole is true)
        {
            // The application's own role (dancemoe) has none of the dangerous attributes; changing it took the services down.
            throw new OperationException(
                $"role {name} exists and is not an analyst login (one in {AnalystGroup} alone, owning nothing): choose another name", OperationFailure.InvalidSettings);
        }

        var role = Quote(name);
        var verb = otherRole is null ? "CREATE" : "ALTER";
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

    private static readonly HashSet<string> ReservedRoleNames = ["public", "none", "current_role", "current_user", "session_user", "user", "system_user"];

    /// <summary>True for an existing role that is more than an analyst login; null when there is none of that name.</summary>
    private const string OtherThanAnAnalystLogin = """
        SELECT r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls
            OR EXISTS (SELECT 1 FROM pg_database d WHERE d.datdba = r.oid)
            OR EXISTS (SELECT 1 FROM pg_class c WHERE c.relowner = r.oid)
            OR EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid AND g.rolname <> @analysts)
            OR NOT EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid AND g.rolname = @analysts)
        FROM pg_roles r WHERE r.rolname = @name
        """;

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
