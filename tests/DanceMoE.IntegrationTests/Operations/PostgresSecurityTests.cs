using DanceMoE.Data;
using DanceMoE.IntegrationTests.Traces;
using DanceMoE.Operations;
using Npgsql;

namespace DanceMoE.IntegrationTests.Operations;

/// <summary>The database asks everyone for a password, the application role is minimal, analysts read the views only.</summary>
public sealed class PostgresSecurityTests(TraceDatabase database) : IClassFixture<TraceDatabase>
{
    private static readonly string[] Views = ["expert_popularity_hourly", "local_ratio_by_placement", "expert_coactivation", "request_path", "request_overview", "communication_by_placement"];

    private static string Admin => AdminDatabase.ConnectionString(TestServices.PostgresUrl);

    [Fact]
    public async Task No_rule_of_pg_hba_conf_trusts_a_connection()
    {
        var rules = await RowsAsync(Admin, "SELECT type, auth_method, coalesce(error, '') FROM pg_hba_file_rules");

        Assert.NotEmpty(rules);
        Assert.All(rules, rule => Assert.Equal(("scram-sha-256", ""), (rule[1], rule[2])));
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public async Task Every_login_has_a_scram_password_and_the_socket_is_for_its_owner_only()
    {
        var withoutScram = await RowsAsync(Admin, "SELECT rolname FROM pg_authid WHERE rolcanlogin AND coalesce(rolpassword, '') NOT LIKE 'SCRAM-SHA-256$%'");
        Assert.Empty(withoutScram);

        var socket = await RowsAsync(Admin, "SELECT current_setting('unix_socket_directories'), current_setting('unix_socket_permissions')");
        var directory = ((string)socket[0][0]).Split(',')[0].Trim();
        var socketOpenToOthers = Convert.ToInt32((string)socket[0][1], 8) & 0b000_111_111;
        var directoryOpenToOthers = (int)File.GetUnixFileMode(directory) & 0b000_111_111;
        Assert.True(socketOpenToOthers == 0 || directoryOpenToOthers == 0, $"socket {(string)socket[0][1]}, folder {directory} {File.GetUnixFileMode(directory)}");
    }

    [Fact]
    public async Task Connecting_without_a_password_fails_over_tcp_and_over_the_socket()
    {
        var server = new NpgsqlConnectionStringBuilder(DatabaseOptions.ToNpgsql(TestServices.PostgresUrl));
        var socketDirectory = ((string)(await RowsAsync(Admin, "SELECT current_setting('unix_socket_directories')"))[0][0]).Split(',')[0].Trim();
        foreach (var host in new[] { server.Host!, socketDirectory })
        {
            foreach (var user in new[] { "postgres", server.Username! })
            {
                var noPassword = new NpgsqlConnectionStringBuilder { Host = host, Port = server.Port, Username = user, Database = "postgres", Pooling = false };
                await using var connection = new NpgsqlConnection(noPassword.ConnectionString);
                await Assert.ThrowsAnyAsync<NpgsqlException>(() => connection.OpenAsync());
            }
        }
    }

    [Fact]
    public async Task The_application_role_can_create_neither_roles_nor_databases()
    {
        var user = new NpgsqlConnectionStringBuilder(DatabaseOptions.ToNpgsql(TestServices.PostgresUrl)).Username!;
        var rights = await RowsAsync(Admin, $"SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = '{user}'");

        Assert.Equal([false, false, false], rights.Single());
    }

    [Fact]
    public async Task An_analyst_login_reads_the_views_and_can_neither_read_the_tables_nor_write()
    {
        var tables = (await RowsAsync(database.ConnectionString, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).Select(row => (string)row[0]).ToList();
        Assert.Contains("routing_events", tables);
        var name = TestServices.UniqueName("analyst");
        var password = Guid.NewGuid().ToString("N");
        await AdminDatabase.CreateAnalystLoginAsync(TestServices.PostgresUrl, name, password, 3, TimeSpan.FromSeconds(7), CancellationToken.None);
        try
        {
            var settings = await RowsAsync(Admin, $"SELECT rolconnlimit, array_to_string(rolconfig, ',') FROM pg_roles WHERE rolname = '{name}'");
            Assert.Equal(3, settings[0][0]);
            Assert.Contains("statement_timeout=7000ms", (string)settings[0][1], StringComparison.Ordinal);

            var analyst = new NpgsqlConnectionStringBuilder(database.ConnectionString) { Username = name, Password = password, Pooling = false }.ConnectionString;
            await using var connection = new NpgsqlConnection(analyst);
            await connection.OpenAsync();
            foreach (var view in Views)
            {
                await using var select = new NpgsqlCommand($"SELECT count(*) FROM {view}", connection);
                await select.ExecuteScalarAsync();
            }

            string[] refused =
            [
                .. tables.Select(table => $"SELECT count(*) FROM \"{table}\""),
                "INSERT INTO requests (id, origin_edge, prompt_tokens, generated_tokens, status, received_at, completed_at) VALUES (gen_random_uuid(), 'x', 1, 1, 'completed', now(), now())",
                "UPDATE routing_events SET remote = NOT remote",
                "DELETE FROM activation_counts",
                "TRUNCATE routing_events",
                "SELECT dancemoe_drop_old_routing_partitions(interval '0')",
                "CREATE TABLE analyst_scratch (id int)",
            ];
            foreach (var sql in refused)
            {
                await using var command = new NpgsqlCommand(sql, connection);
                var ex = await Assert.ThrowsAsync<PostgresException>(() => command.ExecuteNonQueryAsync());
                Assert.True(ex.SqlState is PostgresErrorCodes.InsufficientPrivilege or PostgresErrorCodes.ReadOnlySqlTransaction, $"{sql}: {ex.SqlState} {ex.MessageText}");
            }
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            await RowsAsync(Admin, $"DROP ROLE IF EXISTS \"{name}\"");
        }
    }

    [Fact]
    public async Task Db_analyst_updates_only_an_analyst_login_never_the_application_role_or_a_reserved_name()
    {
        var application = new NpgsqlConnectionStringBuilder(DatabaseOptions.ToNpgsql(TestServices.PostgresUrl)).Username!;
        var before = await RowsAsync(Admin, Settings(application));
        foreach (var name in new[] { application, AdminDatabase.AnalystGroup, "postgres", "public", "pg_read_all_data" })
        {
            var error = await Assert.ThrowsAsync<OperationException>(() =>
                AdminDatabase.CreateAnalystLoginAsync(TestServices.PostgresUrl, name, "hijacked", 4, TimeSpan.FromSeconds(60), CancellationToken.None));
            Assert.Equal(OperationFailure.InvalidSettings, error.Failure);
        }

        Assert.Equal(before, await RowsAsync(Admin, Settings(application)));

        var analyst = TestServices.UniqueName("analyst");
        try
        {
            await AdminDatabase.CreateAnalystLoginAsync(TestServices.PostgresUrl, analyst, "first", 3, TimeSpan.FromSeconds(7), CancellationToken.None);
            await AdminDatabase.CreateAnalystLoginAsync(TestServices.PostgresUrl, analyst, "second", 5, TimeSpan.FromSeconds(7), CancellationToken.None);
            Assert.Equal(5, (await RowsAsync(Admin, $"SELECT rolconnlimit FROM pg_roles WHERE rolname = '{analyst}'"))[0][0]);
        }
        finally
        {
            await RowsAsync(Admin, $"DROP ROLE IF EXISTS \"{analyst}\"");
        }
    }

    private static string Settings(string role) =>
        $"SELECT a.rolconnlimit, a.rolpassword, array_to_string(r.rolconfig, ',') FROM pg_authid a JOIN pg_roles r ON r.oid = a.oid WHERE a.rolname = '{role}'";

    private static async Task<List<object[]>> RowsAsync(string connectionString, string sql)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await using var reader = await command.ExecuteReaderAsync();
        var rows = new List<object[]>();
        while (await reader.ReadAsync())
        {
            var row = new object[reader.FieldCount];
            reader.GetValues(row);
            rows.Add(row);
        }

        return rows;
    }
}
