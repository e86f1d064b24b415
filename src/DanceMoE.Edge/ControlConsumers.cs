using DanceMoE.Contracts;
using DanceMoE.Hosting;
using MassTransit;
using Microsoft.Extensions.Logging;

namespace DanceMoE.Edge;

/// <summary>
/// Loads an expert on command (a migration step): its memory is reserved first (a load that cannot fit fails before any
/// transfer), then the weights arrive and are loaded. With <c>--load-ms-per-mb</c> the transfer from a peer is emulated
/// (on one machine every edge reads the same files).
/// </summary>
public sealed class LoadExpertConsumer(EdgeRuntime edge, EdgeMetrics metrics) : IConsumer<LoadExpert>
{
    public async Task Consume(ConsumeContext<LoadExpert> context)
    {
        var command = context.Message;
        edge.ExpertLoads.Enter();
        try
        {
            using var reservation = edge.Experts.Reserve(command.Layer, command.Expert);
            if (!edge.Experts.Holds(command.Layer, command.Expert) && edge.Options.LoadMsPerMb > 0)
            {
                var megabytes = edge.Experts.BytesOf(command.Layer, command.Expert) / 1048576.0;
                await Task.Delay(TimeSpan.FromMilliseconds(Math.Max(1, megabytes * edge.Options.LoadMsPerMb)), context.CancellationToken).ConfigureAwait(false);
            }

            reservation.Load();
            metrics.ExpertLoaded(succeeded: true);
        }
        catch
        {
            metrics.ExpertLoaded(succeeded: false);
            throw;
        }
        finally
        {
            edge.ExpertLoads.Leave();
        }

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
public sealed class UnloadExpertConsumer(EdgeRuntime edge, EdgeMetrics metrics) : IConsumer<UnloadExpert>
{
    public Task Consume(ConsumeContext<UnloadExpert> context)
    {
        var command = context.Message;
        var was = edge.Experts.Unload(command.Layer, command.Expert);
        if (was)
        {
            metrics.ExpertUnloaded();
        }

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
/// Routes by the coordinator's newest placement from now on (older activations are ignored). A placement that gives this
/// edge experts it does not hold (the edge restarted from its bootstrap file, or missed versions while it was down) is
/// caught up with: the missing experts are loaded, then the ones it no longer gives this edge are unloaded (nothing
/// routes to them any more) to make room for any that did not fit. A migration's placements never need this: its saga
/// loads and unloads each expert itself, with a drain before every unload.
/// </summary>
public sealed class PlacementActivatedConsumer(EdgeRuntime edge, ILogger<PlacementActivatedConsumer> logger) : IConsumer<PlacementActivated>
{
    public async Task Consume(ConsumeContext<PlacementActivated> context)
    {
        var message = context.Message;
        var ahead = message.ActivatedAt - DateTimeOffset.UtcNow;
        if (ahead > ClockSkew.Max)
        {
            // Activation time decides which placement wins: one dated ahead would block every genuine placement after it.
            throw new PlacementException(FormattableString.Invariant(
                $"placement v{message.Version} is activated {ahead.TotalSeconds:F0} s in the future (at {message.ActivatedAt:O}), beyond the {ClockSkew.Max.TotalSeconds:F0} s of clock skew allowed: refused"));
        }

        var current = edge.Routing.Current;
        var placement = new EdgePlacement(message.Version, message.Assignments, message.ActivatedAt);
        if (placement.Supersedes(current))
        {
            placement.Validate(edge.Experts.Manifest.Layers.Count, edge.Experts.Manifest.Architecture.NumExperts);
            var mine = placement.ExpertsOf(edge.Options.Id).ToHashSet();
            var catchingUp = mine.Any(x => !edge.Experts.Holds(x.Layer, x.Expert));
            if (catchingUp)
            {
                LoadWithinBudget(mine);
            }

            edge.Routing.Activate(placement);
            if (catchingUp)
            {
                foreach (var (layer, expert) in edge.Experts.Loaded().Where(x => !mine.Contains(x)))
                {
                    edge.Experts.Unload(layer, expert);
                }

                foreach (var (layer, expert) in LoadWithinBudget(mine))
                {
                    logger.LogWarning("{Edge}: placement v{Version} gives it expert {Layer}.{Expert} but it does not fit its budget; peers asking for it get a fault and retry elsewhere",
                        edge.Options.Id, message.Version, layer, expert);
                }
            }

            logger.LogInformation("{Edge} routes by placement v{Version} (was v{Previous})", edge.Options.Id, message.Version, current.Version);
        }

        await context.Publish(new PlacementApplied { EdgeId = edge.Options.Id, Version = edge.Routing.Current.Version }).ConfigureAwait(false);
    }

    /// <summary>Loads what the placement gives this edge and it lacks; returns the experts that did not fit.</summary>
    private List<(int Layer, int Expert)> LoadWithinBudget(HashSet<(int Layer, int Expert)> mine)
    {
        var refused = new List<(int Layer, int Expert)>();
        foreach (var (layer, expert) in mine.Where(x => !edge.Experts.Holds(x.Layer, x.Expert)).Order())
        {
            try
            {
                edge.Experts.Load(layer, expert);
            }
            catch (ExpertBudgetException)
            {
                refused.Add((layer, expert));
            }
        }

        return refused;
    }
}
