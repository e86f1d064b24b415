using DanceMoE.Contracts;
using DanceMoE.Data;
using DanceMoE.Hosting;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DanceMoE.Coordinator.Saga;

/// <summary>
/// Moves experts between edges while they serve, one move at a time, in the planner's safe order:
/// <code>
/// Requested ─► Loading ──(loaded)──► next move
///              next move is an unload of a routed replica ─► Activating (a version without it) ─► Draining ─► Unloading ─► next move
///              no moves left ─► Activating (the target version) ─► Completed
///   a failed or late load, activation or unload ─► Compensating (back to what is loaded and was routed) ─► Failed
/// </code>
/// Every step has a deadline in the row; the coordinator's timeout job reports steps past it. Answers and timeouts of an
/// earlier stage are ignored, so a redelivered or late message never moves the saga twice.
/// </summary>
public sealed class MigrationStateMachine : MassTransitStateMachine<MigrationState>
{
    private readonly MigrationOptions _options;
    private readonly IDbContextFactory<DanceMoEDbContext> _dbFactory;
    private readonly TimeProvider _time;
    private readonly ILogger<MigrationStateMachine> _logger;
    private readonly CoordinatorMetrics? _metrics;

    public MigrationStateMachine(
        IOptions<MigrationOptions> options, IDbContextFactory<DanceMoEDbContext> dbFactory, TimeProvider time, ILogger<MigrationStateMachine> logger,
        CoordinatorMetrics? metrics = null)
    {
        _metrics = metrics;
        ArgumentNullException.ThrowIfNull(options);
        _options = options.Value;
        _dbFactory = dbFactory;
        _time = time;
        _logger = logger;

        InstanceState(x => x.CurrentState);

        Event(() => Requested, x => x.CorrelateById(c => c.Message.MigrationId));
        Event(() => Loaded, x => x.CorrelateById(c => c.Message.CommandId));
        Event(() => LoadFaulted, x => x.CorrelateById(c => c.Message.Message.CommandId));
        Event(() => Unloaded, x => x.CorrelateById(c => c.Message.CommandId));
        Event(() => UnloadFaulted, x => x.CorrelateById(c => c.Message.Message.CommandId));
        Event(() => Switched, x => x.CorrelateById(c => c.Message.MigrationId));
        Event(() => SwitchFaulted, x => x.CorrelateById(c => c.Message.Message.MigrationId));
        Event(() => TimedOut, x => x.CorrelateById(c => c.Message.MigrationId));

        Initially(
            When(Requested)
                .Then(Start)
                .ThenAsync(AdvanceAsync));

        During(Loading,
            When(Loaded, c => IsCurrentMove(c.Saga, MigrationProgress.Load, c.Message.EdgeId, c.Message.Layer, c.Message.Expert))
                .Then(c => CompleteMove(c.Saga, loaded: true))
                .ThenAsync(AdvanceAsync),
            When(LoadFaulted, c => IsCurrentMove(c.Saga, MigrationProgress.Load, null, c.Message.Message.Layer, c.Message.Message.Expert))
                .ThenAsync(c => CompensateAsync(c, $"loading {Describe(CurrentMove(c.Saga))} failed: {FaultMessage(c.Message)}")),
            When(TimedOut, c => c.Message.Stage == c.Saga.Stage)
                .ThenAsync(c => c.Saga.Retries < _options.Retries
                    ? RetryAsync(c)
                    : CompensateAsync(c, $"loading {Describe(CurrentMove(c.Saga))} got no answer within {_options.LoadTimeoutSeconds:0.#} s, {c.Saga.Retries + 1} tries")));

        During(Activating,
            When(Switched, c => c.Message.Stage == c.Saga.Stage)
                .ThenAsync(SwitchedAsync),
            When(SwitchFaulted, c => c.Message.Message.Stage == c.Saga.Stage)
                .ThenAsync(c => CompensateAsync(c, $"activating a placement failed: {FaultMessage(c.Message)}")),
            When(TimedOut, c => c.Message.Stage == c.Saga.Stage)
                .ThenAsync(c => CompensateAsync(c, $"the edges did not all route by the new placement within {_options.ActivationTimeoutSeconds:0.#} s")));

        During(Draining,
            When(TimedOut, c => c.Message.Stage == c.Saga.Stage)
                .ThenAsync(SendMoveAsync));

        During(Unloading,
            When(Unloaded, c => IsCurrentMove(c.Saga, MigrationProgress.Unload, c.Message.EdgeId, c.Message.Layer, c.Message.Expert))
                .Then(c => CompleteMove(c.Saga, loaded: false))
                .ThenAsync(AdvanceAsync),
            When(UnloadFaulted, c => IsCurrentMove(c.Saga, MigrationProgress.Unload, null, c.Message.Message.Layer, c.Message.Message.Expert))
                .ThenAsync(c => CompensateAsync(c, $"unloading {Describe(CurrentMove(c.Saga))} failed: {FaultMessage(c.Message)}")),
            When(TimedOut, c => c.Message.Stage == c.Saga.Stage)
                .ThenAsync(c => c.Saga.Retries < _options.Retries ? RetryAsync(c) : SkipUnloadAsync(c)));

        During(Compensating,
            When(Switched, c => c.Message.Stage == c.Saga.Stage)
                .ThenAsync(c => FailAsync(c, $"back on v{c.Message.Version}", unloadUnrouted: true)),
            When(SwitchFaulted, c => c.Message.Message.Stage == c.Saga.Stage)
                .ThenAsync(c => FailAsync(c, $"switching back failed ({FaultMessage(c.Message)}); the edges keep routing by v{c.Saga.ActivatedVersion ?? c.Saga.FromVersion}")),
            When(TimedOut, c => c.Message.Stage == c.Saga.Stage)
                .ThenAsync(c => FailAsync(c, $"switching back got no answer; the edges keep routing by v{c.Saga.ActivatedVersion ?? c.Saga.FromVersion}")));

        // Late answers, duplicate requests and timeouts of finished sagas are expected; they change nothing.
        OnUnhandledEvent(c => c.Ignore());
    }

    public State Loading { get; private set; } = null!;

    public State Activating { get; private set; } = null!;

    public State Draining { get; private set; } = null!;

    public State Unloading { get; private set; } = null!;

    public State Compensating { get; private set; } = null!;

    public State Completed { get; private set; } = null!;

    public State Failed { get; private set; } = null!;

    public Event<MigrationRequested> Requested { get; private set; } = null!;

    public Event<ExpertLoaded> Loaded { get; private set; } = null!;

    public Event<Fault<LoadExpert>> LoadFaulted { get; private set; } = null!;

    public Event<ExpertUnloaded> Unloaded { get; private set; } = null!;

    public Event<Fault<UnloadExpert>> UnloadFaulted { get; private set; } = null!;

    public Event<PlacementSwitched> Switched { get; private set; } = null!;

    public Event<Fault<ActivatePlacement>> SwitchFaulted { get; private set; } = null!;

    public Event<MigrationStepTimedOut> TimedOut { get; private set; } = null!;

    private void Start(BehaviorContext<MigrationState, MigrationRequested> context)
    {
        var saga = context.Saga;
        var message = context.Message;
        saga.DecisionId = message.DecisionId;
        saga.FromVersion = message.FromVersion;
        saga.ToVersion = message.ToVersion;
        saga.Moves = MigrationProgress.SerializeMoves(message.Moves);
        saga.Routed = MigrationProgress.Serialize(MigrationProgress.Replicas(message.FromAssignments));
        saga.LoadedByMigration = "[]";
        saga.StartedAt = _time.GetUtcNow();
        _metrics?.MigrationStarted();
        _logger.LogInformation("migration {Migration}: v{From} -> v{To} in {Moves} moves", saga.CorrelationId, saga.FromVersion, saga.ToVersion, message.Moves.Count);
    }

    /// <summary>Sends what the next move needs: a load, an activation that stops routing to a replica before its unload, or the target's activation.</summary>
    private async Task AdvanceAsync(BehaviorContext<MigrationState> context)
    {
        var saga = context.Saga;
        var moves = MigrationProgress.Moves(saga.Moves);
        if (saga.MoveIndex >= moves.Count)
        {
            await ActivateAsync(context, saga.ToVersion, []).ConfigureAwait(false);
            return;
        }

        var move = moves[saga.MoveIndex];
        if (move.Action == MigrationProgress.Unload && MigrationProgress.Replicas(saga.Routed).Contains(MigrationProgress.Key(move)))
        {
            SortedSet<string> next;
            try
            {
                next = MigrationProgress.RoutingBeforeUnloads(moves, saga.MoveIndex, MigrationProgress.Replicas(saga.Routed), MigrationProgress.Replicas(saga.LoadedByMigration));
            }
            catch (InvalidOperationException ex)
            {
                await CompensateAsync(context, ex.Message).ConfigureAwait(false);
                return;
            }

            await ActivateAsync(context, 0, MigrationProgress.Assignments(next)).ConfigureAwait(false);
            return;
        }

        await SendMoveAsync(context).ConfigureAwait(false);
    }

    private async Task SendMoveAsync(BehaviorContext<MigrationState> context)
    {
        var saga = context.Saga;
        var move = CurrentMove(saga);
        var load = move.Action == MigrationProgress.Load;
        var timeout = TimeSpan.FromSeconds(load ? _options.LoadTimeoutSeconds : _options.UnloadTimeoutSeconds);
        NextStage(saga, timeout);
        await context.TransitionToState(load ? Loading : Unloading).ConfigureAwait(false);
        object command = load
            ? new LoadExpert { CommandId = saga.CorrelationId, Layer = move.Layer, Expert = move.Expert }
            : new UnloadExpert { CommandId = saga.CorrelationId, Layer = move.Layer, Expert = move.Expert };

        // Past its deadline nobody waits for it: an edge that was down must not find it queued when it comes back.
        await SendAsync(context, EdgeQueues.ControlAddress(move.EdgeId), command, timeout).ConfigureAwait(false);
    }

    private async Task RetryAsync(BehaviorContext<MigrationState> context)
    {
        context.Saga.Retries++;
        _logger.LogWarning("migration {Migration}: no answer to {Move}; sending it again", context.Saga.CorrelationId, Describe(CurrentMove(context.Saga)));
        await SendMoveAsync(context).ConfigureAwait(false);
    }

    /// <summary>A source that does not answer an unload no longer serves the replica (nothing routes to it): the move is done as far as routing goes.</summary>
    private async Task SkipUnloadAsync(BehaviorContext<MigrationState> context)
    {
        var saga = context.Saga;
        var note = $"{Describe(CurrentMove(saga))} got no answer; nothing routes to that replica any more";
        saga.Reason = saga.Reason is null ? note : $"{saga.Reason}; {note}";
        _logger.LogWarning("migration {Migration}: {Note}", saga.CorrelationId, note);
        CompleteMove(saga, loaded: false);
        await AdvanceAsync(context).ConfigureAwait(false);
    }

    private async Task ActivateAsync(BehaviorContext<MigrationState> context, int version, IReadOnlyList<ExpertAssignment> assignments)
    {
        var saga = context.Saga;
        NextStage(saga, TimeSpan.FromSeconds(_options.ActivationTimeoutSeconds));
        await context.TransitionToState(Activating).ConfigureAwait(false);
        await SendAsync(context, ActivatePlacementConsumerDefinition.Address, new ActivatePlacement
        {
            MigrationId = saga.CorrelationId,
            Stage = saga.Stage,
            Version = version,
            Assignments = assignments,
        }).ConfigureAwait(false);
    }

    private async Task SwitchedAsync(BehaviorContext<MigrationState, PlacementSwitched> context)
    {
        var saga = context.Saga;
        saga.ActivatedVersion = context.Message.Version;
        var moves = MigrationProgress.Moves(saga.Moves);
        if (saga.MoveIndex >= moves.Count)
        {
            await FinishAsync(context, Completed, DecisionStatus.Migrated, null).ConfigureAwait(false);
            _logger.LogInformation("migration {Migration}: completed, v{Version} active", saga.CorrelationId, context.Message.Version);
            return;
        }

        // The replicas the unloads drop are routed to no more; in-flight batches get a moment before the source unloads.
        saga.Routed = MigrationProgress.Serialize(MigrationProgress.RoutingBeforeUnloads(
            moves, saga.MoveIndex, MigrationProgress.Replicas(saga.Routed), MigrationProgress.Replicas(saga.LoadedByMigration)));
        NextStage(saga, TimeSpan.FromMilliseconds(_options.DrainMilliseconds));
        await context.TransitionToState(Draining).ConfigureAwait(false);
    }

    /// <summary>
    /// Undoes what the migration did that the old placement does not have: if it never switched a version, the old one
    /// is still active and the loaded replicas are unloaded; otherwise it switches back to what is loaded and was routed.
    /// </summary>
    private async Task CompensateAsync(BehaviorContext<MigrationState> context, string reason)
    {
        var saga = context.Saga;
        saga.Reason = reason;
        _logger.LogWarning("migration {Migration}: {Reason}; compensating", saga.CorrelationId, reason);
        if (saga.ActivatedVersion is null)
        {
            await UnloadLoadedAsync(context, MigrationProgress.Replicas(saga.Routed)).ConfigureAwait(false);
            await FailAsync(context, $"the old placement v{saga.FromVersion} stays active").ConfigureAwait(false);
            return;
        }

        var fallback = MigrationProgress.Fallback(MigrationProgress.Replicas(saga.Routed), MigrationProgress.Replicas(saga.LoadedByMigration));
        saga.Routed = MigrationProgress.Serialize(fallback);
        NextStage(saga, TimeSpan.FromSeconds(_options.ActivationTimeoutSeconds));
        await context.TransitionToState(Compensating).ConfigureAwait(false);
        await SendAsync(context, ActivatePlacementConsumerDefinition.Address, new ActivatePlacement
        {
            MigrationId = saga.CorrelationId,
            Stage = saga.Stage,
            Assignments = MigrationProgress.Assignments(fallback),
        }).ConfigureAwait(false);
    }

    private async Task FailAsync(BehaviorContext<MigrationState> context, string outcome, bool unloadUnrouted = false)
    {
        var saga = context.Saga;
        if (unloadUnrouted)
        {
            await UnloadLoadedAsync(context, MigrationProgress.Replicas(saga.Routed)).ConfigureAwait(false);
        }

        saga.Reason = $"{saga.Reason}; {outcome}";
        await FinishAsync(context, Failed, DecisionStatus.MigrationFailed, saga.Reason).ConfigureAwait(false);
    }

    /// <summary>Unloads, without waiting, the replicas the migration loaded that nothing routes to; an edge that is down has lost them anyway.</summary>
    private static async Task UnloadLoadedAsync(BehaviorContext<MigrationState> context, SortedSet<string> routed)
    {
        var saga = context.Saga;
        foreach (var key in MigrationProgress.Replicas(saga.LoadedByMigration).Where(k => !routed.Contains(k)))
        {
            var (edge, layer, expert) = MigrationProgress.Parse(key);
            var endpoint = await context.GetSendEndpoint(EdgeQueues.ControlAddress(edge)).ConfigureAwait(false);
            var deadline = SendConfirmDeadline.For(context);
            await SendConfirmDeadline.Confirmed(
                endpoint.Send(new UnloadExpert { CommandId = NewId.NextGuid(), Layer = layer, Expert = expert }, s => s.TimeToLive = TimeSpan.FromMinutes(5), deadline),
                $"an unload of {layer}.{expert} to {edge}", deadline).ConfigureAwait(false);
        }
    }

    private async Task FinishAsync(BehaviorContext<MigrationState> context, State final, string decisionStatus, string? reason)
    {
        var saga = context.Saga;
        saga.DeadlineAt = null;
        saga.FinishedAt = _time.GetUtcNow();
        saga.UpdatedAt = saga.FinishedAt.Value;
        _metrics?.MigrationFinished(final == Completed, saga.FinishedAt.Value - saga.StartedAt);
        await context.TransitionToState(final).ConfigureAwait(false);
        if (saga.DecisionId is { } id)
        {
            await using var db = await _dbFactory.CreateDbContextAsync(context.CancellationToken).ConfigureAwait(false);
            await db.PlacementDecisions.Where(d => d.Id == id)
                .ExecuteUpdateAsync(s => s.SetProperty(d => d.Status, decisionStatus), context.CancellationToken).ConfigureAwait(false);
        }

        if (reason is not null)
        {
            _logger.LogWarning("migration {Migration}: failed: {Reason}", saga.CorrelationId, reason);
        }
    }

    private void NextStage(MigrationState saga, TimeSpan timeout)
    {
        var now = _time.GetUtcNow();
        saga.Stage++;
        saga.DeadlineAt = now + timeout;
        saga.UpdatedAt = now;
    }

    private static void CompleteMove(MigrationState saga, bool loaded)
    {
        var key = MigrationProgress.Key(CurrentMove(saga));
        var byMigration = MigrationProgress.Replicas(saga.LoadedByMigration);
        if (loaded)
        {
            byMigration.Add(key);
            saga.LoadsDone++;
        }
        else
        {
            byMigration.Remove(key);
            var routed = MigrationProgress.Replicas(saga.Routed);
            routed.Remove(key);
            saga.Routed = MigrationProgress.Serialize(routed);
            saga.UnloadsDone++;
        }

        saga.LoadedByMigration = MigrationProgress.Serialize(byMigration);
        saga.MoveIndex++;
        saga.Retries = 0;
    }

    private static ExpertMove CurrentMove(MigrationState saga) => MigrationProgress.Moves(saga.Moves)[saga.MoveIndex];

    private static bool IsCurrentMove(MigrationState saga, string action, string? edgeId, int layer, int expert)
    {
        var moves = MigrationProgress.Moves(saga.Moves);
        if (saga.MoveIndex >= moves.Count)
        {
            return false;
        }

        var move = moves[saga.MoveIndex];
        return move.Action == action && move.Layer == layer && move.Expert == expert && (edgeId is null || move.EdgeId == edgeId);
    }

    private static async Task SendAsync(BehaviorContext<MigrationState> context, Uri address, object message, TimeSpan? timeToLive = null)
    {
        // Answers and faults come back to the saga's own queue, where they are correlated by the migration id.
        var endpoint = await context.GetSendEndpoint(address).ConfigureAwait(false);
        var self = context.ReceiveContext.InputAddress;
        var deadline = SendConfirmDeadline.For(context);
        await SendConfirmDeadline.Confirmed(endpoint.Send(message, s =>
        {
            s.ResponseAddress = self;
            s.FaultAddress = self;
            s.TimeToLive = timeToLive;
        }, deadline), $"{message.GetType().Name} to {address}", deadline).ConfigureAwait(false);
    }

    private static string Describe(ExpertMove move) => $"{move.Action} of expert {move.Layer}.{move.Expert} on {move.EdgeId}";

    private static string FaultMessage<T>(Fault<T> fault) => fault.Exceptions.FirstOrDefault()?.Message ?? "a fault without a message";
}
