using System;
using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace DanceMoE.Migrations.Migrations
{
    /// <inheritdoc />
    public partial class RoutingTraces : Migration
    {
        // routing_events is range-partitioned by day (UTC) on recorded_at, which EF Core cannot express.
        // recorded_at is in the key because a partitioned table's key must contain the partition column;
        // the writer fixes recorded_at when a record is added, so a replayed record has the same key.
        private const string RoutingEventsSql = """
            CREATE TABLE routing_events (
                request_id uuid NOT NULL,
                position integer NOT NULL,
                layer smallint NOT NULL,
                origin_edge character varying(64) NOT NULL,
                experts smallint[] NOT NULL,
                gate_weights real[] NOT NULL,
                served_by text[] NOT NULL,
                placement_version integer NOT NULL,
                remote boolean NOT NULL,
                recorded_at timestamp with time zone NOT NULL,
                CONSTRAINT pk_routing_events PRIMARY KEY (request_id, position, layer, recorded_at),
                CONSTRAINT ck_routing_events_ranges CHECK (position >= 0 AND layer >= 0 AND placement_version >= 0),
                CONSTRAINT ck_routing_events_shape CHECK (
                    cardinality(experts) BETWEEN 1 AND 256
                    AND cardinality(gate_weights) = cardinality(experts)
                    AND cardinality(served_by) = cardinality(experts))
            ) PARTITION BY RANGE (recorded_at);

            CREATE TABLE routing_events_default PARTITION OF routing_events DEFAULT;

            CREATE INDEX ix_routing_events_origin_edge_recorded_at ON routing_events (origin_edge, recorded_at);

            COMMENT ON TABLE routing_events IS 'One row per request, token position and MoE layer: the experts the token used, their gate weights and which edge served each. Partitioned by day (UTC) on recorded_at; partitions are named routing_events_pYYYYMMDD, rows outside them land in routing_events_default.';
            COMMENT ON TABLE routing_events_default IS 'Catch-all partition of routing_events for days without a partition yet; dancemoe_create_routing_partitions moves its rows into the day partition it creates.';
            COMMENT ON COLUMN routing_events.request_id IS 'Request id (requests.id).';
            COMMENT ON COLUMN routing_events.position IS 'Token position in the sequence, from 0 (prompt positions first, then generated ones).';
            COMMENT ON COLUMN routing_events.layer IS 'MoE layer, from 0.';
            COMMENT ON COLUMN routing_events.origin_edge IS 'Edge server where the request arrived (edge_servers.id).';
            COMMENT ON COLUMN routing_events.experts IS 'Experts the router chose for this token in this layer (top-k), in router order.';
            COMMENT ON COLUMN routing_events.gate_weights IS 'Gate weight of each chosen expert, same order as experts.';
            COMMENT ON COLUMN routing_events.served_by IS 'Edge server that executed each chosen expert, same order as experts.';
            COMMENT ON COLUMN routing_events.placement_version IS 'Placement version the origin edge routed with (placements.version).';
            COMMENT ON COLUMN routing_events.remote IS 'True when at least one expert ran on another edge than origin_edge (the layer cost a network round trip).';
            COMMENT ON COLUMN routing_events.recorded_at IS 'When the origin edge recorded the decision (UTC); the partition key.';

            CREATE FUNCTION dancemoe_create_routing_partitions(from_day date, days integer)
            RETURNS SETOF text
            LANGUAGE plpgsql AS $fn$
            DECLARE
                day date;
                part text;
                lower_bound timestamptz;
                upper_bound timestamptz;
            BEGIN
                IF from_day IS NULL OR days IS NULL OR days < 1 OR days > 366 THEN
                    RAISE EXCEPTION 'dancemoe_create_routing_partitions: days must be between 1 and 366 (got %)', days;
                END IF;
                PERFORM pg_advisory_xact_lock(hashtext('dancemoe_routing_partitions'));
                FOR i IN 0 .. days - 1 LOOP
                    day := from_day + i;
                    part := 'routing_events_p' || to_char(day, 'YYYYMMDD');
                    CONTINUE WHEN to_regclass(part) IS NOT NULL;
                    lower_bound := day::timestamp AT TIME ZONE 'UTC';
                    upper_bound := (day + 1)::timestamp AT TIME ZONE 'UTC';
                    IF EXISTS (SELECT FROM routing_events_default WHERE recorded_at >= lower_bound AND recorded_at < upper_bound) THEN
                        -- Rows of that day already sit in the default partition: move them, then attach.
                        EXECUTE format('CREATE TABLE %I (LIKE routing_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
                        EXECUTE format('WITH moved AS (DELETE FROM routing_events_default WHERE recorded_at >= $1 AND recorded_at < $2 RETURNING *) INSERT INTO %I SELECT * FROM moved', part)
                            USING lower_bound, upper_bound;
                        EXECUTE format('ALTER TABLE routing_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lower_bound, upper_bound);
                    ELSE
                        EXECUTE format('CREATE TABLE %I PARTITION OF routing_events FOR VALUES FROM (%L) TO (%L)', part, lower_bound, upper_bound);
                    END IF;
                    EXECUTE format('COMMENT ON TABLE %I IS %L', part, 'routing_events of ' || to_char(day, 'YYYY-MM-DD') || ' (UTC)');
                    RETURN NEXT part;
                END LOOP;
            END
            $fn$;

            COMMENT ON FUNCTION dancemoe_create_routing_partitions(date, integer) IS 'Creates the missing daily partitions of routing_events for days from_day .. from_day + days - 1 (UTC); returns the ones it created. The trace writers call it ahead of time.';

            CREATE FUNCTION dancemoe_drop_old_routing_partitions(keep interval)
            RETURNS SETOF text
            LANGUAGE plpgsql AS $fn$
            DECLARE
                cutoff timestamptz;
                part record;
            BEGIN
                IF keep IS NULL OR keep < interval '0' THEN
                    RAISE EXCEPTION 'dancemoe_drop_old_routing_partitions: keep must be a non-negative interval (got %)', keep;
                END IF;
                cutoff := now() - keep;
                PERFORM pg_advisory_xact_lock(hashtext('dancemoe_routing_partitions'));
                FOR part IN
                    SELECT c.relname::text AS name, to_date(substr(c.relname, 17), 'YYYYMMDD') AS day
                    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                    WHERE i.inhparent = 'routing_events'::regclass AND c.relname ~ '^routing_events_p[0-9]{8}$'
                    ORDER BY c.relname
                LOOP
                    IF (part.day + 1)::timestamp AT TIME ZONE 'UTC' <= cutoff THEN
                        EXECUTE format('DROP TABLE %I', part.name);
                        RETURN NEXT part.name;
                    END IF;
                END LOOP;
                DELETE FROM routing_events_default WHERE recorded_at < cutoff;
            END
            $fn$;

            COMMENT ON FUNCTION dancemoe_drop_old_routing_partitions(interval) IS 'Retention: drops the daily partitions of routing_events whose whole day is older than now() - keep, and deletes such rows from the default partition; returns the dropped partitions. activation_counts is kept.';

            SELECT dancemoe_create_routing_partitions((now() AT TIME ZONE 'UTC')::date - 1, 9);
            """;

        private const string AnalystViewsSql = """
            CREATE VIEW expert_popularity_hourly AS
            SELECT date_trunc('hour', bucket, 'UTC') AS hour,
                   origin_edge,
                   layer,
                   expert,
                   sum(count)::bigint AS activations,
                   (sum(count) / sum(sum(count)) OVER w)::double precision AS share_of_layer,
                   rank() OVER (w ORDER BY sum(count) DESC) AS rank_in_layer
            FROM activation_counts
            GROUP BY 1, 2, 3, 4
            WINDOW w AS (PARTITION BY date_trunc('hour', bucket, 'UTC'), origin_edge, layer);

            COMMENT ON VIEW expert_popularity_hourly IS 'Expert popularity per hour (UTC), origin edge and layer, from activation_counts: activations, share of the layer''s activations, rank within the layer (1 = hottest).';

            CREATE VIEW local_ratio_by_placement AS
            SELECT origin_edge,
                   placement_version,
                   count(*) AS token_layers,
                   count(*) FILTER (WHERE NOT remote) AS local_token_layers,
                   avg(CASE WHEN remote THEN 0 ELSE 1 END)::double precision AS layer_local_ratio,
                   sum(cardinality(experts)) AS expert_calls,
                   sum((SELECT count(*) FROM unnest(served_by) AS s(edge) WHERE s.edge = origin_edge)) AS local_expert_calls,
                   (sum((SELECT count(*) FROM unnest(served_by) AS s(edge) WHERE s.edge = origin_edge))
                       / sum(cardinality(experts)))::double precision AS expert_local_ratio,
                   min(recorded_at) AS first_recorded_at,
                   max(recorded_at) AS last_recorded_at
            FROM routing_events
            GROUP BY origin_edge, placement_version;

            COMMENT ON VIEW local_ratio_by_placement IS 'How local routing was, per origin edge and placement version: layer_local_ratio = share of token-layers with every expert on the origin (no round trip), expert_local_ratio = share of expert calls served by the origin.';

            CREATE VIEW expert_coactivation AS
            SELECT date_trunc('hour', r.recorded_at, 'UTC') AS hour,
                   r.origin_edge,
                   r.layer,
                   a.expert AS expert_a,
                   b.expert AS expert_b,
                   count(*) AS together
            FROM routing_events r
            CROSS JOIN LATERAL unnest(r.experts) AS a(expert)
            CROSS JOIN LATERAL unnest(r.experts) AS b(expert)
            WHERE a.expert < b.expert
            GROUP BY 1, 2, 3, 4, 5;

            COMMENT ON VIEW expert_coactivation IS 'Pairs of experts chosen together for the same token in the same layer, per hour (UTC) and origin edge (expert_a < expert_b). Filter on hour to bound the scan.';

            CREATE VIEW request_path AS
            SELECT r.request_id,
                   q.workload_tag,
                   r.origin_edge,
                   r.position,
                   r.layer,
                   x.rank::integer AS rank,
                   x.expert,
                   x.gate_weight,
                   x.served_by,
                   x.served_by <> r.origin_edge AS remote_call,
                   r.placement_version,
                   r.recorded_at
            FROM routing_events r
            CROSS JOIN LATERAL unnest(r.experts, r.gate_weights, r.served_by) WITH ORDINALITY AS x(expert, gate_weight, served_by, rank)
            LEFT JOIN requests q ON q.id = r.request_id;

            COMMENT ON VIEW request_path IS 'The path of a request through layers and edges: one row per token position, layer and chosen expert (rank 1 = first in router order), with the edge that served it. Filter on request_id.';

            CREATE VIEW request_overview AS
            SELECT q.id AS request_id,
                   q.origin_edge,
                   q.workload_tag,
                   q.status,
                   q.prompt_tokens,
                   q.generated_tokens,
                   q.received_at,
                   (extract(epoch FROM q.completed_at - q.received_at) * 1000)::double precision AS duration_ms,
                   (extract(epoch FROM q.first_token_at - q.received_at) * 1000)::double precision AS time_to_first_token_ms,
                   e.token_layers,
                   e.remote_token_layers,
                   e.layer_local_ratio,
                   q.error
            FROM requests q
            LEFT JOIN LATERAL (
                SELECT count(*) AS token_layers,
                       count(*) FILTER (WHERE r.remote) AS remote_token_layers,
                       avg(CASE WHEN r.remote THEN 0 ELSE 1 END)::double precision AS layer_local_ratio
                FROM routing_events r
                WHERE r.request_id = q.id
            ) e ON true;

            COMMENT ON VIEW request_overview IS 'One row per finished request: timings in milliseconds and how many of its token-layers needed a round trip.';
            """;

        // Roles are cluster-wide and several databases migrate at once (tests): create them once, tolerate the race.
        private const string AnalystRoleSql = """
            DO $do$
            BEGIN
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dancemoe_analyst') THEN
                    BEGIN
                        CREATE ROLE dancemoe_analyst NOLOGIN;
                        COMMENT ON ROLE dancemoe_analyst IS 'Read-only access to the DanceMoE schema (tables and views); grant it to analysts'' logins.';
                    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                    END;
                END IF;
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role % may not create the role dancemoe_analyst', current_user
                    USING HINT = 'create it once as a superuser (CREATE ROLE dancemoe_analyst NOLOGIN); ./dancemoe services up does';
            END
            $do$;

            DO $do$
            BEGIN
                EXECUTE format('GRANT CONNECT ON DATABASE %I TO dancemoe_analyst', current_database());
            END
            $do$;

            GRANT SELECT ON ALL TABLES IN SCHEMA public TO dancemoe_analyst;
            ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO dancemoe_analyst;
            REVOKE EXECUTE ON FUNCTION dancemoe_create_routing_partitions(date, integer) FROM PUBLIC;
            REVOKE EXECUTE ON FUNCTION dancemoe_drop_old_routing_partitions(interval) FROM PUBLIC;
            """;

        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.CreateTable(
                name: "activation_counts",
                columns: table => new
                {
                    bucket = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: false, comment: "Start of the one-minute bucket (UTC) of routing_events.recorded_at."),
                    origin_edge = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: false, comment: "Edge server whose requests activated the expert."),
                    layer = table.Column<short>(type: "smallint", nullable: false, comment: "MoE layer, from 0."),
                    expert = table.Column<short>(type: "smallint", nullable: false, comment: "Expert index within the layer, from 0."),
                    count = table.Column<long>(type: "bigint", nullable: false, comment: "Token-layer activations of the expert in the bucket.")
                },
                constraints: table =>
                {
                    table.PrimaryKey("pk_activation_counts", x => new { x.bucket, x.origin_edge, x.layer, x.expert });
                },
                comment: "Roll-up of routing_events: activations per one-minute bucket, origin edge, layer and expert. The placement job reads it; kept in step with routing_events by the writer, in the same transaction.");

            migrationBuilder.CreateTable(
                name: "placements",
                columns: table => new
                {
                    version = table.Column<int>(type: "integer", nullable: false, comment: "Placement version, increasing; routing_events.placement_version refers to it."),
                    created_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: false, comment: "When it was computed."),
                    algorithm = table.Column<string>(type: "character varying(32)", maxLength: 32, nullable: false, comment: "Algorithm: uniform, redundance, eplb, dancemoe, optimal, latency."),
                    predicted_cost = table.Column<double>(type: "double precision", nullable: false, comment: "The algorithm's predicted cost (expected remote calls per token, or modelled latency)."),
                    inputs_digest = table.Column<string>(type: "character varying(128)", maxLength: 128, nullable: false, comment: "Digest of the inputs it was computed from (activation window, budgets, links)."),
                    is_active = table.Column<bool>(type: "boolean", nullable: false, comment: "True for the placement the cluster serves with now."),
                    activated_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: true, comment: "When the cluster switched to it, if it did.")
                },
                constraints: table =>
                {
                    table.PrimaryKey("pk_placements", x => x.version);
                },
                comment: "Every placement of experts on edges that the placement job computed; at most one is active.");

            migrationBuilder.CreateTable(
                name: "requests",
                columns: table => new
                {
                    id = table.Column<Guid>(type: "uuid", nullable: false, comment: "Request id (the id the client and routing_events.request_id use)."),
                    origin_edge = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: false, comment: "Edge server where the request arrived (edge_servers.id)."),
                    workload_tag = table.Column<string>(type: "character varying(128)", maxLength: 128, nullable: true, comment: "Workload the client declared (region, language, application), if any."),
                    prompt_tokens = table.Column<int>(type: "integer", nullable: false, comment: "Tokens in the prompt."),
                    generated_tokens = table.Column<int>(type: "integer", nullable: false, comment: "Tokens generated."),
                    status = table.Column<string>(type: "character varying(16)", maxLength: 16, nullable: false, comment: "completed, failed or cancelled."),
                    error = table.Column<string>(type: "text", nullable: true, comment: "Error message when the request failed."),
                    placement_version = table.Column<int>(type: "integer", nullable: true, comment: "Placement version in force when the request arrived (placements.version)."),
                    received_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: false, comment: "When the origin edge received the request."),
                    first_token_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: true, comment: "When the first token was generated (end of prefill)."),
                    completed_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: false, comment: "When the request completed or failed.")
                },
                constraints: table =>
                {
                    table.PrimaryKey("pk_requests", x => x.id);
                },
                comment: "One row per finished inference request, written by its origin edge's trace writer.");

            migrationBuilder.Sql(RoutingEventsSql);

            migrationBuilder.CreateTable(
                name: "placement_assignments",
                columns: table => new
                {
                    placement_version = table.Column<int>(type: "integer", nullable: false, comment: "placements.version."),
                    layer = table.Column<short>(type: "smallint", nullable: false, comment: "MoE layer, from 0."),
                    expert = table.Column<short>(type: "smallint", nullable: false, comment: "Expert index within the layer, from 0."),
                    edge_id = table.Column<string>(type: "character varying(64)", maxLength: 64, nullable: false, comment: "Edge server that holds a replica (edge_servers.id).")
                },
                constraints: table =>
                {
                    table.PrimaryKey("pk_placement_assignments", x => new { x.placement_version, x.layer, x.expert, x.edge_id });
                    table.ForeignKey(
                        name: "fk_placement_assignments_placements_placement_version",
                        column: x => x.placement_version,
                        principalTable: "placements",
                        principalColumn: "version",
                        onDelete: ReferentialAction.Cascade);
                },
                comment: "Which edge holds which expert in each placement; one row per replica.");

            migrationBuilder.CreateIndex(
                name: "ix_activation_counts_origin_edge_bucket",
                table: "activation_counts",
                columns: new[] { "origin_edge", "bucket" });

            migrationBuilder.CreateIndex(
                name: "ix_placement_assignments_edge_id_placement_version",
                table: "placement_assignments",
                columns: new[] { "edge_id", "placement_version" });

            migrationBuilder.CreateIndex(
                name: "ix_placements_is_active",
                table: "placements",
                column: "is_active",
                unique: true,
                filter: "is_active");

            migrationBuilder.CreateIndex(
                name: "ix_requests_origin_edge_received_at",
                table: "requests",
                columns: new[] { "origin_edge", "received_at" });

            migrationBuilder.CreateIndex(
                name: "ix_requests_received_at",
                table: "requests",
                column: "received_at");

            migrationBuilder.Sql(AnalystViewsSql);
            migrationBuilder.Sql(AnalystRoleSql);
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.Sql("""
                ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM dancemoe_analyst;
                DROP VIEW request_overview, request_path, expert_coactivation, local_ratio_by_placement, expert_popularity_hourly;
                DROP FUNCTION dancemoe_drop_old_routing_partitions(interval);
                DROP FUNCTION dancemoe_create_routing_partitions(date, integer);
                """);

            migrationBuilder.DropTable(
                name: "activation_counts");

            migrationBuilder.DropTable(
                name: "placement_assignments");

            migrationBuilder.DropTable(
                name: "requests");

            migrationBuilder.Sql("DROP TABLE routing_events;");

            migrationBuilder.DropTable(
                name: "placements");
        }
    }
}
