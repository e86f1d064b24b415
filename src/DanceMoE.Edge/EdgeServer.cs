using DanceMoE.Data;
using DanceMoE.Hosting;
using DanceMoE.Hosting.Metrics;
using DanceMoE.Inference;
using DanceMoE.Model;
using DanceMoE.Traces;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DanceMoE.Edge;

/// <summary>
/// The edge server's composition, shared by the edge host and <c>dancemoe edge</c>: the model loaded through its manifest,
/// the experts of the placement loaded within the budget (or refused before anything starts), and the three queues consumed.
/// </summary>
public static class EdgeServer
{
    /// <summary>Registers the edge: its options (sections <c>Edge</c>, <c>Edge:Link</c>, <c>Edge:Traces</c>), its services and its bus.</summary>
    public static IHostApplicationBuilder AddEdgeServer(this IHostApplicationBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var services = builder.Services;
        services.AddOptions<EdgeOptions>().BindConfiguration(EdgeOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        services.AddOptions<LinkOptions>().BindConfiguration(LinkOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        services.AddOptions<EdgeTraceOptions>().BindConfiguration(EdgeTraceOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        services.AddDanceMoEConnections(builder.Configuration);

        services.AddSingleton<ITraceWriter>(CreateTraceWriter);
        // Registered before the bus so it stops after it: rows of the last requests are flushed or spilled.
        services.AddHostedService<TraceWriterLifetime>();
        services.AddSingleton<EdgeModel>();
        services.AddSingleton<ExpertStore>();
        services.AddSingleton<IRoutingTable, RoutingTable>();
        services.AddSingleton<LinkEmulator>();
        services.AddSingleton<PeerEstimates>();
        services.AddSingleton<ExpertBatchCalls>();
        services.AddSingleton<IExpertDispatcher, DistributedExpertDispatcher>();
        services.AddSingleton(sp =>
        {
            var model = sp.GetRequiredService<EdgeModel>();
            var forward = new MoeForward(model.Manifest, model.Sessions, sp.GetRequiredService<IExpertDispatcher>());
            sp.GetRequiredService<ILogger<MoeForward>>().LogInformation(
                "dense graphs: {Graphs}, {Files} files, {Bytes} bytes of weights", model.Sessions.Options.DenseGraphs, forward.DenseFiles.Count, forward.DenseFiles.Sum(f => f.WeightBytes));
            return forward;
        });
        services.AddSingleton<EdgeMetrics>();
        services.AddSingleton<StepScheduler>();
        services.AddHostedService(sp => sp.GetRequiredService<StepScheduler>());
        services.AddDanceMoEMetrics<EdgeReadiness>(sp => sp.GetRequiredService<EdgeMetrics>().Meter);
        services.AddSingleton(sp =>
        {
            var runtime = ActivatorUtilities.CreateInstance<EdgeRuntime>(sp);
            sp.GetRequiredService<EdgeMetrics>().Observe(runtime);
            sp.GetRequiredService<EdgeMetrics>().SwitchOnSignals();
            sp.GetRequiredService<EdgeReadiness>().Loaded(runtime);
            return runtime;
        });
        services.AddSingleton<GenerationCancellations>();
        services.AddSingleton<HeartbeatService>();

        // Before the bus, so peers' batches are taken before requests are, and after it at stop.
        services.AddSingleton<ExpertLane>();
        services.AddHostedService<ExpertLaneConsumer>();

        services.AddReceiveEndpointWatchdog();
        services.AddMassTransit(bus =>
        {
            bus.DisableUsageTelemetry();
            bus.AddSetAsideByOwner();
            bus.AddConsumer<GenerateTextConsumer, GenerateTextConsumerDefinition>();
            bus.AddConsumer<CancelGenerationConsumer, CancelGenerationConsumerDefinition>();
            bus.AddConsumer<RunExpertBatchConsumer, RunExpertBatchConsumerDefinition>();
            bus.AddConsumer<LoadExpertConsumer, LoadExpertConsumerDefinition>();
            bus.AddConsumer<UnloadExpertConsumer, UnloadExpertConsumerDefinition>();
            bus.AddConsumer<PlacementActivatedConsumer, PlacementActivatedConsumerDefinition>();
            bus.UsingRabbitMq((context, cfg) =>
            {
                context.GetRequiredService<IOptions<RabbitMqOptions>>().Value.ConfigureHost(cfg);
                cfg.UseReplyAddressCheck(context);
                cfg.AddDeserializer(ExpertBatchSerializer.Instance);
                cfg.ConfigureEndpoints(context);
            });
        });
        // After the bus, so the first heartbeat goes once the bus has started and the last one before it stops: one
        // published on a bus not started or stopping is cancelled, and MassTransit logs that as a fault.
        services.AddHostedService(sp => sp.GetRequiredService<HeartbeatService>());
        services.Configure<MassTransitHostOptions>(o =>
        {
            o.WaitUntilStarted = true;
            o.StartTimeout = TimeSpan.FromSeconds(60);
            o.StopTimeout = TimeSpan.FromSeconds(15);
        });
        services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(20));
        return builder;
    }

    /// <summary>
    /// Starts a host built with <see cref="AddEdgeServer"/>: checks its options, loads its model and experts, starts its bus,
    /// then writes its ready file. Returns once it serves.
    /// </summary>
    /// <exception cref="HostStartupException">The edge cannot serve; the message says why in one line.</exception>
    public static async Task<EdgeOptions> StartEdgeAsync(this IHost host, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(host);
        EdgeOptions options;
        try
        {
            host.ValidateOptions();
            options = host.Services.GetRequiredService<IOptions<EdgeOptions>>().Value;
            // Its spill directory is a setting as well: one it cannot use is refused with the others, before the model loads.
            host.Services.GetRequiredService<ITraceWriter>();
            // Before the experts load, so /healthz answers and /readyz says why not yet while they do.
            host.Services.GetRequiredService<MetricsServer>().Start();
            // Loads the model and the placement's experts now, so an edge that cannot hold them never joins the bus.
            host.Services.GetRequiredService<EdgeRuntime>();
        }
        catch (Exception ex) when (ex is OptionsValidationException || IsUnconvertibleSetting(ex))
        {
            throw new HostStartupException(ex.Message, HostStartupFailure.InvalidOption, ex);
        }
        catch (Exception ex) when (ex is PlacementException or ExpertBudgetException or ModelFormatException or FileNotFoundException)
        {
            throw new HostStartupException(ex.Message, HostStartupFailure.CannotServe, ex);
        }
        catch (System.Net.HttpListenerException ex)
        {
            throw new HostStartupException($"cannot listen for metrics: {ex.Message}", HostStartupFailure.CannotServe, ex);
        }

        try
        {
            await host.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is RabbitMqConnectionException or RabbitMQ.Client.Exceptions.BrokerUnreachableException && ServiceRefusal.Describe(ex) is { } refused)
        {
            throw new HostStartupException($"{options.Id} cannot start its bus: {refused}", HostStartupFailure.Refused, ex);
        }
        catch (Exception ex) when (ex is RabbitMqConnectionException or RabbitMQ.Client.Exceptions.BrokerUnreachableException or TimeoutException or OptionsValidationException)
        {
            throw new HostStartupException($"{options.Id} cannot start its bus: {ex.Message}", HostStartupFailure.BrokerUnreachable, ex);
        }

        if (options.ReadyFile is { } ready)
        {
            await File.WriteAllTextAsync(ready, Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture), CancellationToken.None).ConfigureAwait(false);
        }

        return options;
    }

    // A setting that is not a number where one is expected (--memory-mb lots): the binder says which in its message.
    private static bool IsUnconvertibleSetting(Exception ex) =>
        ex is InvalidOperationException { Source: "Microsoft.Extensions.Configuration.Binder" };

    private static ITraceWriter CreateTraceWriter(IServiceProvider services)
    {
        var edge = services.GetRequiredService<IOptions<EdgeOptions>>().Value;
        var traces = services.GetRequiredService<IOptions<EdgeTraceOptions>>().Value;
        if (!traces.Enabled)
        {
            return new NullTraceWriter(edge.Id);
        }

        var writerOptions = new TraceWriterOptions
        {
            EdgeId = edge.Id,
            ConnectionString = DatabaseOptions.ToNpgsql(services.GetRequiredService<IOptions<DatabaseOptions>>().Value.ConnectionString),
        };
        if (traces.SpillDirectory is { } spill)
        {
            writerOptions.SpillDirectory = spill;
        }

        writerOptions.ThrowIfInvalid();
        try
        {
            return new TraceWriter(writerOptions, services.GetRequiredService<ILogger<TraceWriter>>());
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new OptionsValidationException(EdgeTraceOptions.Section, typeof(EdgeTraceOptions),
                [$"{EdgeTraceOptions.Section}:{nameof(EdgeTraceOptions.SpillDirectory)} '{writerOptions.SpillDirectory}' cannot hold the spill files: {ex.Message}"]);
        }
    }
}
