using DanceMoE.Data;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace DanceMoE.Hosting;

public static class ServiceCollectionExtensions
{
    /// <summary>Binds and validates the connection options at start: a wrong URI fails the host before it serves.</summary>
    public static IServiceCollection AddDanceMoEConnections(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<RabbitMqOptions>()
            .Configure(o => o.ConnectionString = configuration.GetConnectionString(RabbitMqOptions.ConnectionName) ?? RabbitMqOptions.LocalDefault)
            .ValidateDataAnnotations()
            .Validate(o => TryParse(() => RabbitMqOptions.Parse(o.ConnectionString)), "ConnectionStrings:rabbitmq is not an amqp:// URI")
            .ValidateOnStart();
        services.AddOptions<DatabaseOptions>()
            .Configure(o => o.ConnectionString = configuration.GetConnectionString(DatabaseOptions.ConnectionName) ?? DatabaseOptions.LocalDefault)
            .ValidateDataAnnotations()
            .Validate(o => TryParse(() => DatabaseOptions.ToNpgsql(o.ConnectionString)), "ConnectionStrings:postgres is not a postgresql:// URI or connection string")
            .ValidateOnStart();
        services.AddSingleton<ReplyAddressProbe>();
        return services;
    }

    public static IServiceCollection AddDanceMoEDatabase(this IServiceCollection services, IConfiguration configuration)
    {
        var connectionString = configuration.GetConnectionString(DatabaseOptions.ConnectionName) ?? DatabaseOptions.LocalDefault;
        try
        {
            // The bus's saga repository reads it while the host is built, before the options are validated at start.
            _ = DatabaseOptions.ToNpgsql(connectionString);
        }
        catch (FormatException ex)
        {
            throw new OptionsValidationException(DatabaseOptions.ConnectionName, typeof(DatabaseOptions), [$"ConnectionStrings:postgres: {ex.Message}"]);
        }

        return services.AddDbContextFactory<DanceMoEDbContext>(b => DanceMoEDbContext.Configure(b, connectionString));
    }

    private static bool TryParse(Action parse)
    {
        try
        {
            parse();
            return true;
        }
        catch (Exception ex) when (ex is FormatException or ArgumentException)
        {
            return false;
        }
    }
}
