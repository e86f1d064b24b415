using DanceMoE.Contracts;
using MassTransit;
using Microsoft.Extensions.Logging;

namespace DanceMoE.Edge;

/// <summary>Loads an expert on command (a migration step), within the budget.</summary>
public sealed class LoadExpertConsumer(EdgeRuntime edge) : IConsumer<LoadExpert>
{
    public Task Consume(ConsumeContext<LoadExpert> context)
    {
        var command = context.Message;
        edge.Experts.Load(command.Layer, command.Expert);
        return context.RespondAsync(new ExpertLoaded
        {
            CommandId = command.CommandId,
            EdgeId = edge.Options.Id,
            Layer = command.Layer,
            Expert = command.Expert,
            MemoryUsedBytes = edge.Experts.UsedBytes,
        });
    }
}

/// <summary>Unloads an expert on command; unloading one that is not held is not an error.</summary>
public sealed class UnloadExpertConsumer(EdgeRuntime edge) : IConsumer<UnloadExpert>
{
    public Task Consume(ConsumeContext<UnloadExpert> context)
    {
        var command = context.Message;
        var was = edge.Experts.Unload(command.Layer, command.Expert);
        return context.RespondAsync(new ExpertUnloaded
        {
            CommandId = command.CommandId,
            EdgeId = edge.Options.Id,
            Layer = command.Layer,
            Expert = command.Expert,
            WasLoaded = was,
            MemoryUsedBytes = edge.Experts.UsedBytes,
        });
    }
}

/// <summary>Routes by a new placement version from now on; stale versions are ignored.</summary>
public sealed class PlacementActivatedConsumer(EdgeRuntime edge, ILogger<PlacementActivatedConsumer> logger) : IConsumer<PlacementActivated>
{
    public async Task Consume(ConsumeContext<PlacementActivated> context)
    {
        var message = context.Message;
        var current = edge.Routing.Current;
        if (message.Version > current.Version)
        {
            var placement = new EdgePlacement(message.Version, message.Assignments);
            placement.Validate(edge.Experts.Manifest.Layers.Count, edge.Experts.Manifest.Architecture.NumExperts);
            edge.Routing.Activate(placement);
            logger.LogInformation("{Edge} routes by placement v{Version} (was v{Previous})", edge.Options.Id, message.Version, current.Version);
        }

        await context.Publish(new PlacementApplied { EdgeId = edge.Options.Id, Version = edge.Routing.Current.Version }).ConfigureAwait(false);
    }
}
