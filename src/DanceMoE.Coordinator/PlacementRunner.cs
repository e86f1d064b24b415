using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using DanceMoE.Contracts;
using DanceMoE.Data;
using DanceMoE.Placement;
using DanceMoE.Traces;
using MassTransit;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DanceMoE.Coordinator;

/// <summary>
/// One run of the placement job: live edges from <see cref="ClusterMembership"/>, decayed activation counts from
/// <c>activation_counts</c> (and for <c>latency</c> a sample of recent requests from <c>routing_events</c>), a candidate
/// from the configured algorithm within <see cref="PlacementJobOptions.SolveSeconds"/>, the paper's migration rule
/// against the active placement, and the decision recorded in <c>placement_decisions</c>. The rule prices a placement
/// by remote calls from the counts or, with a sample, by the sample's modelled mean request latency. A migration whose experts are all loaded where
/// the candidate puts them is activated at once; any other starts the migration saga (<c>pending-saga</c>). While a
/// migration runs, the job plans nothing: a second plan would start from a placement that is about to change.
/// </summary>
public sealed class PlacementRunner(
    ClusterMembership membership,
    PlacementRegistry registry,
    IDbContextFactory<DanceMoEDbContext> dbFactory,
    IOptions<PlacementJobOptions> options,
    IOptions<DatabaseOptions> database,
    IPublishEndpoint publish,
    TimeProvider time,
    ILogger<PlacementRunner> logger)
{
    /// <summary>The longest a run waits, after a restart, for the edges the database knew alive (see <see cref="ClusterMembership.WaitForKnownEdgesAsync"/>).</summary>
    public static readonly TimeSpan KnownEdgesWait = TimeSpan.FromSeconds(60);

    private readonly PlacementJobOptions _options = options.Value;
    private readonly ActivationHistory _history = new(DatabaseOptions.ToNpgsql(database.Value.ConnectionString));
    private int _running;
    private int _maxConcurrent;

    /// <summary>Runs in progress now.</summary>
    public int RunningRuns => Volatile.Read(ref _running);

    /// <summary>The most runs ever in progress at once in this process (the job forbids more than one).</summary>
    public int MaxConcurrentRuns => Volatile.Read(ref _maxConcurrent);

    public async Task<PlacementDecision> RunAsync(string trigger, Guid? commandId, CancellationToken cancellationToken)
    {
        var running = Interlocked.Increment(ref _running);
        InterlockedMax(ref _maxConcurrent, running);
        try
        {
            var outcome = await DecideAsync(trigger, commandId, cancellationToken).ConfigureAwait(false);
            await RecordAsync(outcome, cancellationToken).ConfigureAwait(false);
            var decision = outcome.Decision;
            logger.LogInformation(
                "placement {Trigger}: {Decision} ({Status}) candidate v{Candidate} over v{Current}: {Reason}",
                trigger, decision.Decision, decision.Status, decision.CandidateVersion, decision.CurrentVersion, decision.Reason);
            return decision;
        }
        finally
        {
            Interlocked.Decrement(ref _running);
        }
    }

    private async Task<Outcome> DecideAsync(string trigger, Guid? commandId, CancellationToken cancellationToken)
    {
        if (!await membership.WaitForKnownEdgesAsync(KnownEdgesWait, cancellationToken).ConfigureAwait(false))
        {
            logger.LogWarning("placement {Trigger}: planning without edges not heard since the restart: {Edges}", trigger, string.Join(", ", membership.NotHeardYet()));
        }

        var now = time.GetUtcNow();
        var from = now - TimeSpan.FromMinutes(_options.WindowMinutes);
        var edges = membership.Alive(now);
        var decision = NewDecision(trigger, commandId, edges, from, now);
        var active = await registry.GetActiveAsync(cancellationToken).ConfigureAwait(false);
        decision.CurrentVersion = active?.Version;
        if (await RunningMigrationAsync(now, cancellationToken).ConfigureAwait(false) is { } running)
        {
            return Skip(decision, $"migration {running} is still running: no new plan until it ends");
        }

        if (edges.Count == 0)
        {
            return Skip(decision, $"no live edge (none heard from within {membership.Options.DownAfter.TotalSeconds:F0} s)");
        }

        var demand = await ReadDemandAsync(edges, from, now, cancellationToken).ConfigureAwait(false);
        if (demand.Activations == 0)
        {
            return Skip(decision, $"no activations of live edges between {from:O} and {now:O}");
        }

        if (_options.Algorithm == PlacementAlgorithms.Latency)
        {
            var sample = await RoutingSample.ReadAsync(dbFactory, demand.Index, demand.Model, from, now, _options.SampleRequests, cancellationToken).ConfigureAwait(false);
            if (sample.Workload.Requests.Count == 0)
            {
                return Skip(decision, $"no complete request routing of live edges in routing_events between {from:O} and {now:O}");
            }

            demand.UseSample(sample);
        }

        var budget = TimeSpan.FromSeconds(_options.SolveSeconds);
        var algorithm = _options.Algorithm == PlacementAlgorithms.Latency ? new LatencyPlacement { TimeBudget = budget } : PlacementAlgorithms.Create(_options.Algorithm);
        var candidate = PlanCandidate(algorithm, demand, decision, budget, cancellationToken);
        if (candidate is null)
        {
            return new Outcome(decision, null);
        }

        var candidateUnit = demand.UnitSeconds(candidate);
        decision.CandidateCostSeconds = demand.SecondsOver(_options.HorizonSeconds, candidateUnit);
        var digest = Digest(edges, from, now);
        if (active is null && Loaded(edges, demand.Model) is { } loaded)
        {
            active = await RegisterBootstrapAsync(loaded, demand, digest, cancellationToken).ConfigureAwait(false);
            decision.CurrentVersion = active?.Version;
        }

        if (active is null)
        {
            decision.CandidateVersion = await RegisterAsync(algorithm.Name, candidate, demand, digest, cancellationToken).ConfigureAwait(false);
            decision.Decision = DecisionKind.Migrate;
            decision.Reason = "no active placement yet and the live edges do not hold every expert: the candidate is the first";
            return await StartMigrationOrActivateAsync(decision, candidate, edges, null, cancellationToken).ConfigureAwait(false);
        }

        var current = PlacementAssignments.ToPlacement(active.Assignments, demand.Index, demand.Model.Layers, demand.Model.Experts);
        var currentUnit = demand.UnitSeconds(current);
        decision.CurrentCostSeconds = demand.SecondsOver(_options.HorizonSeconds, currentUnit);
        if (candidate.SameAs(current) && active.Assignments.All(a => a.Servers.All(demand.Index.ContainsKey)))
        {
            decision.CandidateVersion = active.Version;
            decision.Decision = DecisionKind.Stay;
            decision.MigrationCostSeconds = 0;
            decision.PredictedGainSeconds = 0;
            decision.Reason = "the candidate equals the active placement";
            return new Outcome(decision, null);
        }

        decision.CandidateVersion = await RegisterAsync(algorithm.Name, candidate, demand, digest, cancellationToken).ConfigureAwait(false);
        var plan = ApplyMigrationRule(decision, active, current, currentUnit, candidate, candidateUnit, demand);
        return plan is null
            ? new Outcome(decision, null)
            : await StartMigrationOrActivateAsync(decision, candidate, edges, (active, plan), cancellationToken).ConfigureAwait(false);
    }

    private PlacementDecision NewDecision(string trigger, Guid? commandId, IReadOnlyList<EdgeMember> edges, DateTimeOffset from, DateTimeOffset to) => new()
    {
        DecidedAt = to,
        Trigger = trigger,
        CommandId = commandId,
        Algorithm = _options.Algorithm,
        Decision = DecisionKind.Skipped,
        Status = DecisionStatus.None,
        Reason = "",
        WindowFrom = from,
        WindowTo = to,
        Edges = edges.Select(e => e.EdgeId).ToArray(),
    };

    private static Outcome Skip(PlacementDecision decision, string reason)
    {
        decision.Reason = reason;
        return new Outcome(decision, null);
    }

    /// <summary>The live edges' decayed activation counts in the window, the model and the cluster they make.</summary>
    private async Task<Demand> ReadDemandAsync(IReadOnlyList<EdgeMember> edges, DateTimeOffset from, DateTimeOffset to, CancellationToken cancellationToken)
    {
        var halfLife = _options.HalfLifeMinutes > 0 ? TimeSpan.FromMinutes(_options.HalfLifeMinutes) : (TimeSpan?)null;
        var rows = await _history.ReadAsync(from, to, halfLife, cancellationToken).ConfigureAwait(false);
        var model = MoeModel.Uniform(_options.Layers, _options.Experts, _options.TopK, _options.ExpertBytes, _options.HiddenBytes);
        var index = edges.Select((e, i) => (e.EdgeId, i)).ToDictionary(p => p.EdgeId, p => p.i, StringComparer.Ordinal);
        var counts = new ActivationCounts(edges.Count, model.Layers, model.Experts);
        long activations = 0;
        foreach (var row in rows)
        {
            if (index.TryGetValue(row.OriginEdge, out var n) && row.Layer < model.Layers && row.Expert < model.Experts)
            {
                counts[n, row.Layer, row.Expert] += row.Weight;
                activations += row.Count;
            }
        }

        return new Demand(edges, index, model, counts, activations, to - from, _options);
    }

    /// <summary>
    /// The configured algorithm's candidate within <paramref name="budget"/>, or null (the reason recorded) when no
    /// placement fits the live edges or the algorithm found none in time. <c>latency</c> keeps its own budget and
    /// returns its best placement when it is spent; the others are cancelled.
    /// </summary>
    private static ExpertPlacement? PlanCandidate(IPlacementAlgorithm algorithm, Demand demand, PlacementDecision decision, TimeSpan budget, CancellationToken cancellationToken)
    {
        var problem = new PlacementProblem(demand.Model, demand.Cluster, demand.Counts) { History = demand.Sample, Latency = demand.Latency };
        var watch = Stopwatch.StartNew();
        ExpertPlacement candidate;
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        if (algorithm is not LatencyPlacement)
        {
            deadline.CancelAfter(budget);
        }

        try
        {
            cancellationToken.ThrowIfCancellationRequested();
            candidate = algorithm.Place(problem, deadline.Token);
        }
        catch (InfeasiblePlacementException ex)
        {
            decision.Reason = $"no placement fits the live edges: {ex.Message}";
            return null;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            decision.SolveMilliseconds = watch.Elapsed.TotalMilliseconds;
            decision.Reason = string.Create(CultureInfo.InvariantCulture, $"{algorithm.Name} found no placement within PlacementJob:SolveSeconds = {budget.TotalSeconds:F1} s");
            return null;
        }

        decision.SolveMilliseconds = watch.Elapsed.TotalMilliseconds;
        cancellationToken.ThrowIfCancellationRequested();
        return candidate;
    }

    /// <summary>Cold start: the edges serve their bootstrap placement; what they hold is registered and activated as the first version.</summary>
    private async Task<RegisteredPlacement?> RegisterBootstrapAsync(ExpertPlacement loaded, Demand demand, string digest, CancellationToken cancellationToken)
    {
        var version = await RegisterAsync("bootstrap", loaded, demand, digest, cancellationToken).ConfigureAwait(false);
        await registry.ActivateAsync(version, cancellationToken).ConfigureAwait(false);
        return await registry.GetActiveAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Adds a placement to the registry, its cost the remote calls per token it leaves.</summary>
    private Task<int> RegisterAsync(string algorithm, ExpertPlacement placement, Demand demand, string digest, CancellationToken cancellationToken)
    {
        var remoteCallsPerToken = RemoteShare(placement, demand.Counts) * demand.Model.Layers * demand.Model.TopK;
        return registry.AddAsync(algorithm, remoteCallsPerToken, digest, PlacementAssignments.From(placement, demand.EdgeIds), cancellationToken);
    }

    /// <summary>
    /// The paper's migration rule: the plan of moves from the active placement when the candidate repays it within the
    /// horizon; null (a stay, its reason recorded) when no safe order of moves exists or moving is not worth it.
    /// </summary>
    private MigrationPlan? ApplyMigrationRule(
        PlacementDecision decision, RegisteredPlacement active, ExpertPlacement current, double currentUnitSeconds, ExpertPlacement candidate, double candidateUnitSeconds, Demand demand)
    {
        MigrationPlan plan;
        try
        {
            plan = MigrationPlanner.Plan(current, candidate, demand.Model, demand.Cluster);
        }
        catch (Exception ex) when (ex is InvalidOperationException or ArgumentException)
        {
            decision.Decision = DecisionKind.Stay;
            decision.Reason = $"no safe order of moves from v{active.Version}: {ex.Message}";
            return null;
        }

        var rule = MigrationPlanner.Decide(currentUnitSeconds, candidateUnitSeconds, demand.UnitsPerSecond, _options.HorizonSeconds, plan);
        decision.Loads = plan.Loads;
        decision.Unloads = plan.Unloads;
        decision.BytesMoved = plan.BytesMoved;
        decision.MigrationCostSeconds = rule.MigrationSeconds;
        decision.PredictedGainSeconds = rule.CurrentCostSeconds - rule.CandidateCostSeconds - rule.MigrationSeconds;
        var terms = string.Create(
            CultureInfo.InvariantCulture,
            $"{demand.CostKind}: candidate {rule.CandidateCostSeconds:F3} s + migration {rule.MigrationSeconds:F3} s vs current {rule.CurrentCostSeconds:F3} s over {_options.HorizonSeconds:F0} s");
        if (!rule.Migrate)
        {
            decision.Decision = DecisionKind.Stay;
            decision.Reason = $"{terms}: not worth moving";
            return null;
        }

        decision.Decision = DecisionKind.Migrate;
        decision.Reason = $"{terms}: {plan.Loads} loads, {plan.Unloads} unloads";
        return plan;
    }

    /// <summary>
    /// Activates the candidate at once when every expert is already loaded where it goes; otherwise asks for a
    /// migration saga (when there is an active placement to migrate from) that moves them first.
    /// </summary>
    private async Task<Outcome> StartMigrationOrActivateAsync(
        PlacementDecision decision, ExpertPlacement candidate, IReadOnlyList<EdgeMember> edges, (RegisteredPlacement Active, MigrationPlan Plan)? from,
        CancellationToken cancellationToken)
    {
        var missing = edges.Select((edge, n) => candidate.On(n).Count(x => !edge.Holds(x.Layer, x.Expert))).Sum();
        if (missing > 0 && from is var (active, plan))
        {
            decision.Status = DecisionStatus.PendingSaga;
            decision.Reason += $"; {missing} experts must be loaded first: a migration saga moves them";
            var migration = new MigrationRequested
            {
                MigrationId = NewId.NextGuid(),
                FromVersion = active.Version,
                FromAssignments = active.Assignments,
                ToVersion = decision.CandidateVersion!.Value,
                Moves = [.. plan.Steps.Select(step => new ExpertMove
                {
                    Action = step.Action == MigrationAction.Load ? Saga.MigrationProgress.Load : Saga.MigrationProgress.Unload,
                    EdgeId = edges[step.Server].EdgeId,
                    Layer = step.Layer,
                    Expert = step.Expert,
                })],
            };
            return new Outcome(decision, migration);
        }

        if (missing > 0)
        {
            decision.Status = DecisionStatus.None;
            decision.Reason += $"; {missing} experts are not loaded where it puts them and no placement is active to migrate from";
            return new Outcome(decision, null);
        }

        await registry.ActivateAsync(decision.CandidateVersion!.Value, cancellationToken).ConfigureAwait(false);
        decision.Status = DecisionStatus.Activated;
        decision.Reason += "; every expert already loaded where it goes: switched directly";
        return new Outcome(decision, null);
    }

    /// <summary>Records the decision in <c>placement_decisions</c>, then asks for its migration, if any.</summary>
    private async Task RecordAsync(Outcome outcome, CancellationToken cancellationToken)
    {
        var decision = outcome.Decision;
        decision.MigrationId = outcome.Migration?.MigrationId;
        await using var db = await dbFactory.CreateDbContextAsync(cancellationToken).ConfigureAwait(false);
        db.PlacementDecisions.Add(decision);
        await db.SaveChangesAsync(cancellationToken).ConfigureAwait(false);
        if (outcome.Migration is { } migration)
        {
            await publish.Publish(migration with { DecisionId = decision.Id }, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The migration still running, if any: a saga row in a running state, or a decision that started one whose row is
    /// not there yet (the request is on its way); a request lost for ten minutes blocks no more.
    /// </summary>
    private async Task<Guid?> RunningMigrationAsync(DateTimeOffset now, CancellationToken cancellationToken)
    {
        await using var db = await dbFactory.CreateDbContextAsync(cancellationToken).ConfigureAwait(false);
        var running = await db.Migrations.AsNoTracking()
            .Where(m => MigrationStateName.Running.Contains(m.CurrentState))
            .Select(m => (Guid?)m.CorrelationId).FirstOrDefaultAsync(cancellationToken).ConfigureAwait(false);
        if (running is not null)
        {
            return running;
        }

        var since = now - TimeSpan.FromMinutes(10);
        return await db.PlacementDecisions.AsNoTracking()
            .Where(d => d.Status == DecisionStatus.PendingSaga && d.MigrationId != null && d.DecidedAt > since && !db.Migrations.Any(m => m.CorrelationId == d.MigrationId))
            .Select(d => d.MigrationId).FirstOrDefaultAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Share of the (decayed) activations that a placement serves off their origin edge.</summary>
    public static double RemoteShare(ExpertPlacement placement, ActivationCounts counts)
    {
        ArgumentNullException.ThrowIfNull(placement);
        ArgumentNullException.ThrowIfNull(counts);
        double remote = 0;
        double total = 0;
        for (var n = 0; n < counts.Servers; n++)
        {
            for (var l = 0; l < counts.Layers; l++)
            {
                for (var e = 0; e < counts.Experts; e++)
                {
                    var f = counts[n, l, e];
                    total += f;
                    if (!placement.Holds(n, l, e))
                    {
                        remote += f;
                    }
                }
            }
        }

        return total > 0 ? remote / total : 0;
    }

    /// <summary>What the live edges hold by their heartbeats, when that covers every expert; otherwise null.</summary>
    private static ExpertPlacement? Loaded(IReadOnlyList<EdgeMember> edges, MoeModel model)
    {
        var placement = new ExpertPlacement(edges.Count, model.Layers, model.Experts);
        for (var n = 0; n < edges.Count; n++)
        {
            for (var l = 0; l < model.Layers; l++)
            {
                for (var e = 0; e < model.Experts; e++)
                {
                    if (edges[n].Holds(l, e))
                    {
                        placement.Add(n, l, e);
                    }
                }
            }
        }

        for (var l = 0; l < model.Layers; l++)
        {
            for (var e = 0; e < model.Experts; e++)
            {
                if (placement.Replicas(l, e) == 0)
                {
                    return null;
                }
            }
        }

        return placement;
    }

    private string Digest(IReadOnlyList<EdgeMember> edges, DateTimeOffset from, DateTimeOffset to)
    {
        var text = string.Join(
            ';',
            edges.Select(e => FormattableString.Invariant($"{e.EdgeId}={e.MemoryBudgetBytes}"))
                .Append(FormattableString.Invariant($"window={from:O}/{to:O};half-life={_options.HalfLifeMinutes};link={_options.BandwidthMbps}/{_options.RttMs}")));
        return "sha256:" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));
    }

    private static void InterlockedMax(ref int target, int value)
    {
        var seen = Volatile.Read(ref target);
        while (value > seen)
        {
            var previous = Interlocked.CompareExchange(ref target, value, seen);
            if (previous == seen)
            {
                return;
            }

            seen = previous;
        }
    }

    /// <summary>A decision and the migration it asks for, if any.</summary>
    private sealed record Outcome(PlacementDecision Decision, MigrationRequested? Migration);

    /// <summary>What one run plans for: the live edges, their activations in the window, the model and the cluster.</summary>
    private sealed class Demand(
        IReadOnlyList<EdgeMember> edges, Dictionary<string, int> index, MoeModel model, ActivationCounts counts, long activations, TimeSpan window, PlacementJobOptions options)
    {
        public string[] EdgeIds { get; } = [.. edges.Select(e => e.EdgeId)];

        /// <summary>Each live edge's row in <see cref="Counts"/> and server index in <see cref="Cluster"/>.</summary>
        public Dictionary<string, int> Index => index;

        public MoeModel Model => model;

        public ActivationCounts Counts => counts;

        /// <summary>Activations in the window, undecayed.</summary>
        public long Activations => activations;

        public Cluster Cluster { get; } = Cluster.FullMesh(
            edges.Select(e => ServerSpec.Edge(e.EdgeId, e.MemoryBudgetBytes)).ToList(),
            LinkSpec.FromMbps(options.BandwidthMbps, options.RttMs));

        public double ActivationsPerSecond => activations / window.TotalSeconds;

        /// <summary>Recent whole requests when the algorithm plans by modelled latency; null when it plans by counts.</summary>
        public Workload? Sample { get; private set; }

        public LatencyOptions Latency { get; private set; } = new();

        private double _requestsPerSecond;

        /// <summary>What the migration rule prices, for the decision's reason.</summary>
        public string CostKind => Sample is null ? "remote calls" : FormattableString.Invariant($"modelled latency of {Sample.Requests.Count} recent requests");

        /// <summary>Units of demand per second: requests with a sample, activations without.</summary>
        public double UnitsPerSecond => Sample is null ? ActivationsPerSecond : _requestsPerSecond;

        /// <summary>Plans by the sample's modelled latency: its requests decode their mean generated tokens, and arrive at the window's rate.</summary>
        public void UseSample(RoutingSample sample)
        {
            Sample = sample.Workload;
            _requestsPerSecond = Math.Max(sample.RequestsInWindow, sample.Workload.Requests.Count) / window.TotalSeconds;
            Latency = new LatencyOptions
            {
                DecodeTokens = sample.MeanGeneratedTokens is { } generated ? Math.Max(1, (int)Math.Round(generated)) : Latency.DecodeTokens,
                RequestIntervalSeconds = Cluster.Count / _requestsPerSecond,
            };
        }

        /// <summary>
        /// Seconds one unit of demand costs under <paramref name="placement"/>: a request's modelled mean routed-expert
        /// latency with a sample; without, the remote share of an activation times a remote call.
        /// </summary>
        public double UnitSeconds(ExpertPlacement placement) => Sample is null
            ? RemoteShare(placement, counts) * SecondsPerRemoteCall
            : new LatencyModel(model, Cluster, Latency).Evaluate(placement, Sample).LatencyMsMean / 1e3;

        /// <summary>Seconds the demand costs over <paramref name="horizonSeconds"/> at <paramref name="unitSeconds"/> a unit.</summary>
        public double SecondsOver(double horizonSeconds, double unitSeconds) => unitSeconds * UnitsPerSecond * horizonSeconds;

        /// <summary>One remote activation costs a round trip plus the hidden state both ways.</summary>
        public double SecondsPerRemoteCall
        {
            get
            {
                var link = Cluster.Link(0, Math.Min(1, Cluster.Count - 1));
                return Cluster.Count == 1 ? 0 : link.RttSeconds + (2.0 * model.HiddenBytes / link.BytesPerSecond);
            }
        }
    }
}
