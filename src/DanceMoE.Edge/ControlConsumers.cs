using DanceMoE.Contracts;
using MassTransit;
using Microsoft.Extensions.Logging;

namespace DanceMoE.Edge;

/// <summary>
/// Loads an expert on command (a migration step), within the budget. With <c>--load-ms-per-mb</c> the weights' transfer
/// from a peer is emulated (on one machine every edge reads the same files).
/// </summary>
public sealed class LoadExpertConsumer(EdgeRuntime edge) : IConsumer<LoadExpert>
{
    public async Task Consume(ConsumeContext<LoadExpert> context)
    {
        var command = context.Message;
        edge.Experts.CheckRange(command.Layer, command.Expert);
        if (!edge.Experts.Holds(command.Layer, command.Expert) && edge.Options.LoadMsPerMb > 0)
        {
            var megabytes = edge.Experts.BytesOf(command.Layer, command.Expert) / 1048576.0;
            await Task.Delay(TimeSpan.FromMilliseconds(Math.Max(1, megabytes * edge.Options.LoadMsPerMb)), context.CancellationToken).ConfigureAwait(false);
        }

        edge.Experts.Load(command.Layer, command.Expert);
        await context.RespondAsync(new ExpertLoaded
        {
            CommandId = command.CommandId,
            EdgeId = edge.Options.Id,
            Layer = command.Layer,
            Expert = command.Expert,
            MemoryUsedBytes = edge.Experts.UsedBytes,
        }).ConfigureAwait(false);
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

/// <summary>
/// Routes by the coordinator's newest placement from now on (older activations are ignored). Experts it gives this edge
/// that are not loaded (an edge restarted from its bootstrap file) are loaded first, within the budget.
/// </summary>
public sealed class PlacementActivatedConsumer(EdgeRuntime edge, ILogger<PlacementActivatedConsumer> logger) : IConsumer<PlacementActivated>
{
    public async Task Consume(ConsumeContext<PlacementActivated> context)
    {
        var message = context.Message;
        var current = edge.Routing.Current;
        var placement = new EdgePlacement(message.Version, message.Assignments, message.ActivatedAt);
        if (placement.Supersedes(current))
        {
            placement.Validate(edge.Experts.Manifest.Layers.Count, edge.Experts.Manifest.Architecture.NumExperts);
            foreach (var (layer, expert) in placement.ExpertsOf(edge.Options.Id).Where(x => !edge.Experts.Holds(x.Layer, x.Expert)))
            {
                try
                {
                    edge.Experts.Load(layer, expert);
                }
                catch (ExpertBudgetException ex)
                {
                    logger.LogWarning("{Edge}: placement v{Version} gives it expert {Layer}.{Expert} but {Reason}; peers asking for it get a fault and retry elsewhere",
                        edge.Options.Id, message.Version, layer, expert, ex.Message);
                }
            }

            edge.Routing.Activate(placement);
            logger.LogInformation("{Edge} routes by placement v{Version} (was v{Previous})", edge.Options.Id, message.Version, current.Version);
        }

        await context.Publish(new PlacementApplied { EdgeId = edge.Options.Id, Version = edge.Routing.Current.Version }).ConfigureAwait(false);
    }
}
