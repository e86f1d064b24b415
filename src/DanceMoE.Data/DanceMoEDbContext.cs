using Microsoft.EntityFrameworkCore;

namespace DanceMoE.Data;

/// <summary>The DanceMoE schema. Tables and columns are snake_case so analysts can query them without quoting.</summary>
public sealed class DanceMoEDbContext(DbContextOptions<DanceMoEDbContext> options) : DbContext(options)
{
    public const string MigrationsAssembly = "DanceMoE.Migrations";
    public const string MigrationsHistoryTable = "ef_migrations_history";

    public DbSet<EdgeServer> EdgeServers => Set<EdgeServer>();

    public DbSet<InferenceRequest> Requests => Set<InferenceRequest>();

    public DbSet<RoutingEvent> RoutingEvents => Set<RoutingEvent>();

    public DbSet<ActivationCount> ActivationCounts => Set<ActivationCount>();

    public DbSet<PlacementVersion> Placements => Set<PlacementVersion>();

    public DbSet<PlacementAssignment> PlacementAssignments => Set<PlacementAssignment>();

    public DbSet<PlacementDecision> PlacementDecisions => Set<PlacementDecision>();

    public DbSet<MigrationState> Migrations => Set<MigrationState>();

    /// <summary>The one place that configures Npgsql for this context, so every host maps the schema alike.</summary>
    public static DbContextOptionsBuilder Configure(DbContextOptionsBuilder builder, string connectionString) =>
        builder
            .UseNpgsql(DatabaseOptions.ToNpgsql(connectionString), npgsql => npgsql
                .MigrationsAssembly(MigrationsAssembly)
                .MigrationsHistoryTable(MigrationsHistoryTable))
            .UseSnakeCaseNamingConvention();

    public static DanceMoEDbContext Create(string connectionString) =>
        new(((DbContextOptionsBuilder<DanceMoEDbContext>)Configure(new DbContextOptionsBuilder<DanceMoEDbContext>(), connectionString)).Options);

    protected override void OnModelCreating(ModelBuilder modelBuilder)
    {
        modelBuilder.Entity<EdgeServer>(edge =>
        {
            edge.ToTable("edge_servers", t => t.HasComment("Edge servers of the cluster, as their last heartbeat described them."));
            edge.HasKey(e => e.Id);
            edge.Property(e => e.Id).HasMaxLength(64);
            edge.Property(e => e.ComputeClass).HasMaxLength(128);
            edge.Property(e => e.ExecutionProvider).HasMaxLength(16);
            edge.Property(e => e.HeartbeatSeconds).HasDefaultValue(0d)
                .HasComment("How often the edge said it sends heartbeats, in seconds (0: it did not say); when longer than the coordinator's interval, missed heartbeats are counted by it.");
        });

        modelBuilder.Entity<InferenceRequest>(request =>
        {
            request.ToTable("requests", t => t.HasComment("One row per finished inference request, written by its origin edge's trace writer."));
            request.HasKey(r => r.Id);
            request.Property(r => r.Id).ValueGeneratedNever().HasComment("Request id (the id the client and routing_events.request_id use).");
            request.Property(r => r.OriginEdge).HasMaxLength(64).HasComment("Edge server where the request arrived (edge_servers.id).");
            request.Property(r => r.WorkloadTag).HasMaxLength(128).HasComment("Workload the client declared (region, language, application), if any.");
            request.Property(r => r.PromptTokens).HasComment("Tokens in the prompt.");
            request.Property(r => r.Fingerprint).HasMaxLength(16).HasComment(
                "First 16 bytes of a SHA-256 of what the answer depends on (prompt token ids, max tokens, sampling, seed, replayed request, workload tag): a retry under the same id has the same; null in rows from before edges stored it.");
            request.Property(r => r.GeneratedTokens).HasComment("Tokens generated.");
            request.Property(r => r.Status).HasMaxLength(16).HasComment("completed, failed or cancelled.");
            request.Property(r => r.Error).HasComment("Error message when the request failed.");
            request.Property(r => r.PlacementVersion).HasComment("Placement version in force when the request arrived (placements.version).");
            request.Property(r => r.ReceivedAt).HasComment("When the origin edge received the request.");
            request.Property(r => r.FirstTokenAt).HasComment("When the first token was generated (end of prefill).");
            request.Property(r => r.CompletedAt).HasComment("When the request completed or failed.");
            request.Property(r => r.RemoteBatches).HasComment(
                "Expert batch messages to other edges that carried rows of this request (one per peer per layer per step at most); null in rows from before edges stored it.");
            request.Property(r => r.RemoteBatchShare).HasComment(
                "This request's share of its remote_batches by its rows in each: summed over requests, the messages sent (a message several requests shared counts once).");
            request.Property(r => r.RemoteBytes).HasComment("This request's share of the tensor bytes sent to other edges and received back (hidden rows out, expert outputs in).");
            request.Property(r => r.BatchRetries).HasComment("Expert batches of this request retried on another replica after a peer did not answer in time or refused.");
            request.HasIndex(r => new { r.OriginEdge, r.ReceivedAt });
            request.HasIndex(r => r.ReceivedAt);
        });

        // Partitioned by day on recorded_at: the migration creates the table with raw SQL; this mapping is for reading.
        modelBuilder.Entity<RoutingEvent>(routing =>
        {
            routing.ToTable("routing_events");
            routing.Property(r => r.OriginEdge).HasMaxLength(64);

            // One row per request, position and layer, however often the request is served. A partitioned table's key
            // must hold the partition column (recorded_at), which a second serving changes: so no primary key, and the
            // migration and dancemoe_create_routing_partitions make this unique index on each partition.
            routing.HasNoKey();
            routing.HasIndex(r => new { r.RequestId, r.Position, r.Layer }).IsUnique();
        });

        modelBuilder.Entity<ActivationCount>(count =>
        {
            count.ToTable("activation_counts", t => t.HasComment(
                "Roll-up of routing_events: activations per one-minute bucket, origin edge, layer and expert. The placement job reads it; kept in step with routing_events by the writer, in the same transaction."));
            count.HasKey(c => new { c.Bucket, c.OriginEdge, c.Layer, c.Expert });
            count.Property(c => c.Bucket).HasComment("Start of the one-minute bucket (UTC) of routing_events.recorded_at.");
            count.Property(c => c.OriginEdge).HasMaxLength(64).HasComment("Edge server whose requests activated the expert.");
            count.Property(c => c.Layer).HasComment("MoE layer, from 0.");
            count.Property(c => c.Expert).HasComment("Expert index within the layer, from 0.");
            count.Property(c => c.Count).HasComment("Token-layer activations of the expert in the bucket.");
            count.HasIndex(c => new { c.OriginEdge, c.Bucket });
        });

        modelBuilder.Entity<PlacementVersion>(placement =>
        {
            placement.ToTable("placements", t => t.HasComment("Every placement of experts on edges that the placement job computed; at most one is active."));
            placement.HasKey(p => p.Version);
            placement.Property(p => p.Version).ValueGeneratedNever().HasComment("Placement version, increasing; routing_events.placement_version refers to it.");
            placement.Property(p => p.CreatedAt).HasComment("When it was computed.");
            placement.Property(p => p.Algorithm).HasMaxLength(32).HasComment("Algorithm: uniform, redundance, eplb, dancemoe, optimal, latency.");
            placement.Property(p => p.PredictedCost).HasComment("The algorithm's predicted cost (expected remote calls per token, or modelled latency).");
            placement.Property(p => p.InputsDigest).HasMaxLength(128).HasComment("Digest of the inputs it was computed from (activation window, budgets, links).");
            placement.Property(p => p.IsActive).HasComment("True for the placement the cluster serves with now.");
            placement.Property(p => p.ActivatedAt).HasComment("When the cluster switched to it, if it did.");
            placement.HasIndex(p => p.IsActive).IsUnique().HasFilter("is_active");
            placement.HasMany(p => p.Assignments).WithOne().HasForeignKey(a => a.PlacementVersion).OnDelete(DeleteBehavior.Cascade);
        });

        modelBuilder.Entity<PlacementAssignment>(assignment =>
        {
            assignment.ToTable("placement_assignments", t => t.HasComment("Which edge holds which expert in each placement; one row per replica."));
            assignment.HasKey(a => new { a.PlacementVersion, a.Layer, a.Expert, a.EdgeId });
            assignment.Property(a => a.PlacementVersion).HasComment("placements.version.");
            assignment.Property(a => a.Layer).HasComment("MoE layer, from 0.");
            assignment.Property(a => a.Expert).HasComment("Expert index within the layer, from 0.");
            assignment.Property(a => a.EdgeId).HasMaxLength(64).HasComment("Edge server that holds a replica (edge_servers.id).");
            assignment.HasIndex(a => new { a.EdgeId, a.PlacementVersion });
        });

        modelBuilder.Entity<PlacementDecision>(decision =>
        {
            decision.ToTable("placement_decisions", t => t.HasComment("Every run of the placement job: the candidate placement, the migration rule's inputs and its decision."));
            decision.HasKey(d => d.Id);
            decision.Property(d => d.Id).UseIdentityAlwaysColumn();
            decision.Property(d => d.DecidedAt).HasComment("When the job decided.");
            decision.Property(d => d.Trigger).HasMaxLength(16).HasComment("schedule (cron) or run-now.");
            decision.Property(d => d.CommandId).HasComment("Id of the RunPlacementNow command that asked for the run, if any.");
            decision.Property(d => d.Algorithm).HasMaxLength(32).HasComment("Placement algorithm the job ran.");
            decision.Property(d => d.CurrentVersion).HasComment("placements.version active when the job ran.");
            decision.Property(d => d.CandidateVersion).HasComment("placements.version of the candidate (the current one when they are equal).");
            decision.Property(d => d.Decision).HasMaxLength(16).HasComment("migrate, stay or skipped.");
            decision.Property(d => d.Status).HasMaxLength(16).HasComment(
                "activated (switched directly: every expert already loaded where it goes), pending-saga (a migration moves experts first), migrated or migration-failed (how that migration ended), or none.");
            decision.Property(d => d.MigrationId).HasComment("migrations.id of the migration started for this decision, if any.");
            decision.Property(d => d.Reason).HasComment("Why, in words.");
            decision.Property(d => d.CurrentCostSeconds).HasComment("Remote-call seconds over the horizon with the current placement.");
            decision.Property(d => d.CandidateCostSeconds).HasComment("Remote-call seconds over the horizon with the candidate.");
            decision.Property(d => d.MigrationCostSeconds).HasComment("Seconds to transfer the experts that move (T_mig).");
            decision.Property(d => d.PredictedGainSeconds).HasComment("current - candidate - migration cost; the rule migrates when it is positive.");
            decision.Property(d => d.Loads).HasComment("Expert loads the migration needs.");
            decision.Property(d => d.Unloads).HasComment("Expert unloads the migration needs.");
            decision.Property(d => d.BytesMoved).HasComment("Expert bytes the migration transfers.");
            decision.Property(d => d.WindowFrom).HasComment("Start of the activation window read.");
            decision.Property(d => d.WindowTo).HasComment("End of the activation window read.");
            decision.Property(d => d.Edges).HasComment("Live edges the placement was computed for, in server order.");
            decision.Property(d => d.SolveMilliseconds).HasComment("Time the algorithm took.");
            decision.HasIndex(d => d.DecidedAt);
            decision.HasIndex(d => d.CommandId);
        });

        modelBuilder.Entity<MigrationState>(migration =>
        {
            migration.ToTable("migrations", t => t.HasComment("Every migration saga: the moves that turn one placement into another, how far it got and how it ended."));
            migration.HasKey(m => m.CorrelationId);
            migration.Property(m => m.CorrelationId).HasColumnName("id").ValueGeneratedNever().HasComment("Migration id.");
            migration.Property(m => m.CurrentState).HasColumnName("state").HasMaxLength(32)
                .HasComment("Loading, Activating, Draining, Unloading, Compensating (in progress), Completed or Failed.");
            migration.Property(m => m.DecisionId).HasComment("placement_decisions.id of the decision that started it.");
            migration.Property(m => m.FromVersion).HasComment("placements.version active when it started.");
            migration.Property(m => m.ToVersion).HasComment("placements.version it moves to.");
            migration.Property(m => m.Moves).HasColumnType("jsonb").HasComment("The moves in order: action (load or unload), edge, layer, expert.");
            migration.Property(m => m.MoveIndex).HasComment("Index of the move in progress (from 0).");
            migration.Property(m => m.Stage).HasComment("Counter of commands sent; answers and timeouts of older stages are ignored.");
            migration.Property(m => m.DeadlineAt).HasComment("When the step in progress times out.");
            migration.Property(m => m.Retries).HasComment("Times the move in progress was sent again after a timeout.");
            migration.Property(m => m.Routed).HasColumnType("jsonb").HasComment("Replicas the edges route by now (edge/layer/expert).");
            migration.Property(m => m.LoadedByMigration).HasColumnType("jsonb").HasComment("Replicas this migration loaded (edge/layer/expert): what compensation unloads.");
            migration.Property(m => m.ActivatedVersion).HasComment("placements.version the migration activated last.");
            migration.Property(m => m.LoadsDone).HasComment("Expert loads done.");
            migration.Property(m => m.UnloadsDone).HasComment("Expert unloads done.");
            migration.Property(m => m.StartedAt).HasComment("When the saga started.");
            migration.Property(m => m.UpdatedAt).HasComment("When the saga last changed.");
            migration.Property(m => m.FinishedAt).HasComment("When it completed or failed.");
            migration.Property(m => m.Reason).HasComment("Why it failed, or what compensation did.");
            migration.HasIndex(m => m.CurrentState);
            migration.HasIndex(m => m.DeadlineAt);
        });
    }
}
