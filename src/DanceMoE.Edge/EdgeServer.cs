using System.ComponentModel.DataAnnotations;
using DanceMoE.Hosting;
using DanceMoE.Inference;
using DanceMoE.Data;
using DanceMoE.Model;
using DanceMoE.Traces;
using MassTransit;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DanceMoE.Edge;

/// <summary>
/// Builds an edge server's host: the model loaded through its manifest, the experts of the placement
/// loaded within the budget (or refused before anything starts), and the three queues consumed.
/// </summary>
public static class EdgeServer
{
    public static IHost Build(EdgeOptions options, IConfiguration configuration, Action<ILoggingBuilder>? logging = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        Validate(options);
        var manifest = ModelManifest.Load(options.ModelDirectory);
        var architecture = manifest.Architecture;
        var placement = options.PlacementFile switch
        {
            null => PlacementFile.Uniform(0, architecture.NumLayers, architecture.NumExperts, [options.Id]),
            "uniform" => PlacementFile.Uniform(1, architecture.NumLayers, architecture.NumExperts,
                options.UniformOver ?? throw new PlacementException("a uniform placement needs the list of edges to spread over")),
            var file => PlacementFile.Load(file),
        };
        placement.Validate(architecture.NumLayers, architecture.NumExperts);

        var builder = ServiceHost.CreateBuilder(configuration, logging);

        var startupLog = LoggerFactory.Create(l => l.AddSimpleConsole(o => o.SingleLine = true)).CreateLogger("DanceMoE.Edge");
        var sessions = new SessionFactory(
            new InferenceOptions { Provider = InferenceOptions.ParseProvider(options.Provider), IntraOpThreads = options.IntraOpThreads, InterOpThreads = 1 },
            message => startupLog.LogWarning("{Edge}: {Message}", options.Id, message));
        var store = new ExpertStore(new ExpertSessionPool(manifest, sessions), options.MemoryBudgetBytes);
        store.LoadAll([.. placement.ExpertsOf(options.Id)], options.Id);
        var routing = new RoutingTable(placement);
        var tokenizer = manifest.Tokenizer is { } t ? new ByteTokenizer(t.BosTokenId, t.EosTokenId) : ByteTokenizer.Default;
        var link = new LinkEmulator(options.LinkDelayMs, options.LinkMbps);

        var services = builder.Services;
        services.AddSingleton(options);
        services.AddSingleton<ITraceWriter>(sp => options.TracesEnabled
            ? CreateTraceWriter(options, builder.Configuration, sp.GetRequiredService<ILogger<TraceWriter>>())
            : new NullTraceWriter(options.Id));
        // Registered before the bus so it stops after it: rows of the last requests are flushed or spilled.
        services.AddHostedService<TraceWriterLifetime>();
        services.AddSingleton(store);
        services.AddSingleton<IRoutingTable>(routing);
        services.AddSingleton(link);
        services.AddDanceMoEConnections(builder.Configuration);
        services.AddSingleton(sp => new DistributedExpertDispatcher(
            options.Id, store, routing, sp.GetRequiredService<IClientFactory>(), link,
            TimeSpan.FromMilliseconds(options.ExpertDeadlineMs), options.MaxBatchBytes, sp.GetRequiredService<ITraceWriter>(),
            sp.GetRequiredService<ILogger<DistributedExpertDispatcher>>()));
        services.AddSingleton(sp => new MoeForward(manifest, sessions, sp.GetRequiredService<DistributedExpertDispatcher>())
        {
            OnRouting = record => RequestScope.Current?.Route(record),
        });
        services.AddSingleton(sp => new EdgeRuntime(
            options, store, routing, sp.GetRequiredService<MoeForward>(), tokenizer, link, sp.GetRequiredService<ITraceWriter>(), sessions.ProviderInUse ?? "cpu"));
        services.AddSingleton<HeartbeatService>();
        services.AddHostedService(sp => sp.GetRequiredService<HeartbeatService>());

        services.AddMassTransit(bus =>
        {
            bus.AddConsumer<GenerateTextConsumer>();
            bus.AddConsumer<RunExpertBatchConsumer>();
            bus.AddConsumer<LoadExpertConsumer>();
            bus.AddConsumer<UnloadExpertConsumer>();
            bus.AddConsumer<PlacementActivatedConsumer>();
            bus.UsingRabbitMq((context, cfg) =>
            {
                context.GetRequiredService<IOptions<RabbitMqOptions>>().Value.ConfigureHost(cfg);
                cfg.ReceiveEndpoint(EdgeQueues.Requests(options.Id), e =>
                {
                    // One generation at a time: the dense part is this edge's own CPU or GPU.
                    e.PrefetchCount = 8;
                    e.ConcurrentMessageLimit = 1;
                    e.ConfigureConsumer<GenerateTextConsumer>(context);
                });
                cfg.ReceiveEndpoint(EdgeQueues.Experts(options.Id), e =>
                {
                    // Peers' expert work has its own queue, so it is never stuck behind a long generation.
                    e.PrefetchCount = 32;
                    e.ConcurrentMessageLimit = 4;
                    e.ConfigureConsumer<RunExpertBatchConsumer>(context);
                });
                cfg.ReceiveEndpoint(EdgeQueues.Control(options.Id), e =>
                {
                    e.ConcurrentMessageLimit = 1;
                    e.ConfigureConsumer<LoadExpertConsumer>(context);
                    e.ConfigureConsumer<UnloadExpertConsumer>(context);
                    e.ConfigureConsumer<PlacementActivatedConsumer>(context);
                });
            });
        });
        services.Configure<MassTransitHostOptions>(o =>
        {
            o.WaitUntilStarted = true;
            o.StartTimeout = TimeSpan.FromSeconds(60);
            o.StopTimeout = TimeSpan.FromSeconds(15);
        });
        services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(20));
        return builder.Build();
    }

    private static TraceWriter CreateTraceWriter(EdgeOptions options, IConfiguration configuration, ILogger<TraceWriter> logger)
    {
        var writerOptions = new TraceWriterOptions
        {
            EdgeId = options.Id,
            ConnectionString = DatabaseOptions.ToNpgsql(configuration.GetConnectionString(DatabaseOptions.ConnectionName) ?? DatabaseOptions.LocalDefault),
        };
        if (options.TraceSpillDirectory is { } spill)
        {
            writerOptions.SpillDirectory = spill;
        }

        writerOptions.ThrowIfInvalid();
        return new TraceWriter(writerOptions, logger);
    }

    private static void Validate(EdgeOptions options)
    {
        var results = new List<System.ComponentModel.DataAnnotations.ValidationResult>();
        if (!Validator.TryValidateObject(options, new ValidationContext(options), results, validateAllProperties: true))
        {
            throw new OptionsValidationException(nameof(EdgeOptions), typeof(EdgeOptions), results.Select(r => $"{string.Join(",", r.MemberNames)}: {r.ErrorMessage}"));
        }
    }
}
