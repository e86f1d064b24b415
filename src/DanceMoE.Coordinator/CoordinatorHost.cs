using DanceMoE.Coordinator.Saga;
using DanceMoE.Data;
using DanceMoE.Hosting;
using DanceMoE.Hosting.Metrics;
using MassTransit;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Quartz;

namespace DanceMoE.Coordinator;

/// <summary>
/// The coordinator's composition: options validated at start, membership, the placement registry, the Quartz placement
/// job on its cron trigger (the scheduler waits for a running job at shutdown), the migration saga persisted in
/// PostgreSQL with its timeout job, and the bus endpoints (each consumer's definition names its queue and limits).
/// </summary>
public static class CoordinatorHost
{
    /// <summary>The coordinator's host on <see cref="ServiceHost"/>'s defaults, configured by <paramref name="configuration"/>.</summary>
    public static IHost Build(IConfiguration configuration, Action<ILoggingBuilder>? logging = null)
    {
        var builder = ServiceHost.CreateBuilder(configuration, logging);
        builder.AddCoordinator();
        return builder.Build();
    }

    /// <summary>Starts a host built with <see cref="AddCoordinator"/>: its options are checked before its bus or any service starts.</summary>
    /// <exception cref="HostStartupException">The coordinator cannot serve; the message says why in one line.</exception>
    public static async Task StartCoordinatorAsync(this IHost host, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(host);
        try
        {
            host.ValidateOptions();
            await host.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OptionsValidationException ex)
        {
            throw new HostStartupException(string.Join("; ", ex.Failures), HostStartupFailure.InvalidOption, ex);
        }
        catch (InvalidOperationException ex) when (IsUnconvertibleSetting(ex))
        {
            throw new HostStartupException(ex.Message, HostStartupFailure.InvalidOption, ex);
        }
        catch (DatabaseSchemaException ex)
        {
            throw new HostStartupException(ex.Message, HostStartupFailure.CannotServe, ex);
        }
        catch (System.Net.HttpListenerException ex)
        {
            throw new HostStartupException($"the coordinator cannot listen for metrics: {ex.Message}", HostStartupFailure.CannotServe, ex);
        }
        catch (Exception ex) when (ServiceRefusal.Describe(ex) is { } refused)
        {
            throw new HostStartupException($"the coordinator cannot start: {refused}", HostStartupFailure.Refused, ex);
        }
        catch (Exception ex) when (ex is RabbitMqConnectionException or TimeoutException)
        {
            throw new HostStartupException($"the coordinator cannot start its bus: {ex.Message}", HostStartupFailure.BrokerUnreachable, ex);
        }
    }

    /// <summary>A setting that does not convert to its option's type (for example <c>Migration__DrainMilliseconds=abc</c>): the caller's mistake.</summary>
    public static bool IsUnconvertibleSetting(InvalidOperationException ex)
    {
        ArgumentNullException.ThrowIfNull(ex);
        return ex.Message.StartsWith("Failed to convert configuration value", StringComparison.Ordinal);
    }

    /// <summary>Adds everything the coordinator runs to <paramref name="builder"/>, configured from its configuration.</summary>
    public static HostApplicationBuilder AddCoordinator(this HostApplicationBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var services = builder.Services;
        services.AddDanceMoEConnections(builder.Configuration);
        services.AddDanceMoEDatabase(builder.Configuration);
        services.AddHostedService<DatabaseSchemaCheck>();
        services.AddClusterMembership();
        services.AddHostedService<MembershipWarmUp>();
        services.AddOptions<PlacementJobOptions>().BindConfiguration(PlacementJobOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        services.AddSingleton(TimeProvider.System);
        services.AddSingleton<PlacementAcknowledgements>();
        services.AddSingleton(sp => new PlacementRegistry(
            sp.GetRequiredService<Microsoft.EntityFrameworkCore.IDbContextFactory<Data.DanceMoEDbContext>>(),
            sp.GetRequiredService<IBus>()));
        services.AddSingleton<PlacementRunner>();
        services.AddSingleton<CoordinatorMetrics>();
        services.AddDanceMoEMetrics<CoordinatorReadiness>(sp => sp.GetRequiredService<CoordinatorMetrics>().Meter);
        services.AddSingleton<LaggingEdgeConsumer.SentLog>();
        services.AddSingleton(typeof(OutageLog<>));
        services.AddOptions<MigrationOptions>().BindConfiguration(MigrationOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        var migration = builder.Configuration.GetSection(MigrationOptions.Section).Get<MigrationOptions>() ?? new MigrationOptions();

        services.AddReceiveEndpointWatchdog();
        services.AddMassTransit(bus =>
        {
            bus.DisableUsageTelemetry();
            bus.AddSetAsideByOwner();
            bus.AddConsumer<EdgeHeartbeatConsumer, EdgeHeartbeatConsumerDefinition>();
            bus.AddConsumer<PlacementAppliedConsumer, PlacementAppliedConsumerDefinition>();
            bus.AddConsumer<RunPlacementNowConsumer, RunPlacementNowConsumerDefinition>();
            bus.AddConsumer<LaggingEdgeConsumer, LaggingEdgeConsumerDefinition>();
            bus.AddConsumer<ActivatePlacementConsumer, ActivatePlacementConsumerDefinition>();
            bus.AddSagaStateMachine<MigrationStateMachine, MigrationState, MigrationStateDefinition>().PostgresRepository();
            bus.UsingRabbitMq((context, cfg) =>
            {
                context.GetRequiredService<IOptions<RabbitMqOptions>>().Value.ConfigureHost(cfg);
                cfg.UseReplyAddressCheck(context);
                cfg.ConfigureEndpoints(context);
            });
        });
        // An invalid expression is reported by the options validation at start, not here.
        var cron = builder.Configuration.GetSection(PlacementJobOptions.Section).Get<PlacementJobOptions>()?.Cron is { } configured && PlacementJobOptions.IsCron(configured)
            ? configured
            : new PlacementJobOptions().Cron;
        services.AddQuartz(q =>
        {
            q.ConfigureScheduler(o => o.InstanceName = "dancemoe-coordinator");
            q.AddJob<PlacementJob>(j => j.WithIdentity(PlacementJob.Key));
            q.AddTrigger(t => t
                .ForJob(PlacementJob.Key)
                .WithIdentity(PlacementJob.ScheduleKey)
                .WithCronSchedule(cron, c => c.WithMisfireInstruction(CronTriggerMisfireInstruction.FireAndProceed)));
            q.AddJob<MigrationTimeoutJob>(j => j.WithIdentity(MigrationTimeoutJob.Key));
            q.AddTrigger(t => t
                .ForJob(MigrationTimeoutJob.Key)
                .WithIdentity(MigrationTimeoutJob.ScheduleKey)
                .WithSimpleSchedule(s => s
                    .WithInterval(TimeSpan.FromMilliseconds(Math.Clamp(migration.TimeoutScanMilliseconds, 50, 60_000)))
                    .RepeatForever()));
        });
        // Registered after the bus so it stops first: a running job finishes while it can still publish.
        services.AddQuartzHostedService(o => o.WaitForJobsToComplete = true);

        services.Configure<MassTransitHostOptions>(o =>
        {
            o.WaitUntilStarted = true;
            o.StartTimeout = TimeSpan.FromSeconds(60);
            o.StopTimeout = TimeSpan.FromSeconds(15);
        });
        services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(60));
        return builder;
    }
}
