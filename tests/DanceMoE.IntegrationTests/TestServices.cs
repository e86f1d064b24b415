using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using DanceMoE.Data;
using DanceMoE.Hosting;
using DanceMoE.Operations;
using Npgsql;

namespace DanceMoE.IntegrationTests;

/// <summary>
/// The real RabbitMQ and PostgreSQL started by <c>./dancemoe services up</c> (or named by
/// <c>ConnectionStrings__rabbitmq</c> / <c>ConnectionStrings__postgres</c>, and the ports by <c>DANCEMOE_*_PORT</c>, as
/// the CLI finds them). Tests fail, never skip, when they are not there.
/// </summary>
public static class TestServices
{
    /// <summary>
    /// The broker's admin credential (<c>ConnectionStrings__rabbitmq_admin</c>, else the one <c>services up</c> generated):
    /// tests make virtual hosts of their own with it and use it there for every role.
    /// </summary>
    public static string RabbitMqUri => LocalEnvironment.RabbitMqUriFor(BusRole.Admin);

    public static string PostgresUrl => LocalEnvironment.PostgresUrl;

    public static string ManagementUrl => LocalEnvironment.RabbitMqManagementUrl;

    public static string UniqueName(string prefix) => $"{prefix}_{Guid.NewGuid():N}"[..(prefix.Length + 13)];
}

/// <summary>A virtual host of its own for one test class, deleted afterwards.</summary>
public sealed class IsolatedVirtualHost : IAsyncLifetime
{
    private readonly RabbitMqBroker _broker = RabbitMqOptions.Parse(TestServices.RabbitMqUri);

    public string Name { get; } = TestServices.UniqueName("test");

    /// <summary>The amqp:// URI of the isolated virtual host.</summary>
    public string Uri => _broker.UriFor(Name);

    public async Task InitializeAsync()
    {
        try
        {
            await PutAsync($"api/vhosts/{Name}", "{}");
            await PutAsync($"api/permissions/{Name}/{_broker.Username}", """{"configure":".*","write":".*","read":".*"}""");
        }
        catch (HttpRequestException ex)
        {
            throw new InvalidOperationException(
                $"RabbitMQ management API at {TestServices.ManagementUrl} is not reachable: start the services with ./dancemoe services up ({ex.Message})", ex);
        }
    }

    /// <summary>Lets broker user <paramref name="user"/> (another role's) configure, write and read everything here.</summary>
    public Task GrantAsync(string user) =>
        PutAsync($"api/permissions/{Name}/{user}", """{"configure":".*","write":".*","read":".*"}""");

    public async Task DisposeAsync()
    {
        using var management = CreateManagementClient();
        using var response = await management.DeleteAsync(new Uri($"api/vhosts/{Name}", UriKind.Relative));
    }

    /// <summary>The names of the queues declared here now.</summary>
    public async Task<List<string>> QueuesAsync()
    {
        using var management = CreateManagementClient();
        var queues = await management.GetFromJsonAsync<List<JsonElement>>(new Uri($"api/queues/{Name}?columns=name", UriKind.Relative));
        return [.. queues!.Select(q => q.GetProperty("name").GetString()!)];
    }

    private async Task PutAsync(string path, string json)
    {
        using var management = CreateManagementClient();
        using var content = new StringContent(json, Encoding.UTF8, "application/json");
        using var response = await management.PutAsync(new Uri(path, UriKind.Relative), content);
        response.EnsureSuccessStatusCode();
    }

    private HttpClient CreateManagementClient()
    {
        var client = new HttpClient { BaseAddress = new Uri(TestServices.ManagementUrl) };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue(
            "Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{_broker.Username}:{_broker.Password}")));
        return client;
    }
}

/// <summary>
/// A database of its own for one test class, owned by the application role, dropped afterwards. The admin connection
/// (<see cref="AdminDatabase"/>) creates and drops it: the application role may not.
/// </summary>
public sealed class IsolatedDatabase : IAsyncLifetime
{
    public string Name { get; } = TestServices.UniqueName("test");

    public string ConnectionString { get; private set; } = "";

    public async Task InitializeAsync()
    {
        var server = new NpgsqlConnectionStringBuilder(DatabaseOptions.ToNpgsql(TestServices.PostgresUrl));
        try
        {
            await AdminDatabase.CreateDatabaseAsync(TestServices.PostgresUrl, Name, CancellationToken.None);
        }
        catch (NpgsqlException ex)
        {
            throw new InvalidOperationException(
                $"PostgreSQL at {server.Host}:{server.Port} is not reachable: start the services with ./dancemoe services up ({ex.Message})", ex);
        }

        server.Database = Name;
        ConnectionString = server.ConnectionString;
    }

    public async Task DisposeAsync()
    {
        NpgsqlConnection.ClearAllPools();
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await AdminDatabase.DropDatabaseAsync(TestServices.PostgresUrl, Name, CancellationToken.None);
                return;
            }
            catch (PostgresException ex) when (attempt < 10 && ex.SqlState is PostgresErrorCodes.ObjectInUse)
            {
                // A writer of the test class may still be closing its last connection.
                await Task.Delay(200);
            }
        }
    }
}
