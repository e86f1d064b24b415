using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace DanceMoE.Migrations.Migrations
{
    /// <inheritdoc />
    public partial class ExactlyOnceRoutingEvents : Migration
    {
        // A request served twice (a redelivery after a crash, a client that resends) has the same request, positions and
        // layers but later recorded_at. A partitioned table's unique index must hold the partition column (recorded_at),
        // so the key is made on each daily partition, here and in dancemoe_create_routing_partitions: a serving again
        // within the same UTC day is skipped by the writer's ON CONFLICT DO NOTHING and not counted.
        // Rows already stored twice are removed first (the earliest kept) and taken out of activation_counts.
        private const string UpSql = """
            CREATE FUNCTION dancemoe_key_routing_partition(part regclass)
            RETURNS void
            LANGUAGE plpgsql AS $fn$
            DECLARE
                part_name text := (SELECT relname FROM pg_class WHERE oid = part);
            BEGIN
                EXECUTE format($q$
                    WITH ranked AS (
                        SELECT ctid AS row_id, row_number() OVER (PARTITION BY request_id, position, layer ORDER BY recorded_at, ctid) AS n
                        FROM %1$s
                    ), removed AS (
                        DELETE FROM %1$s r USING ranked d WHERE r.ctid = d.row_id AND d.n > 1
                        RETURNING r.origin_edge, r.layer, r.experts, r.recorded_at
                    ), uncounted AS (
                        SELECT date_trunc('minute', recorded_at, 'UTC') AS bucket, origin_edge, layer, e.expert, count(*) AS n
                        FROM removed CROSS JOIN LATERAL unnest(experts) AS e(expert)
                        GROUP BY 1, 2, 3, 4
                    )
                    UPDATE activation_counts a SET count = greatest(a.count - u.n, 0)
                    FROM uncounted u
                    WHERE a.bucket = u.bucket AND a.origin_edge = u.origin_edge AND a.layer = u.layer AND a.expert = u.expert
                    $q$, part);
                EXECUTE format('CREATE UNIQUE INDEX IF NOT EXISTS %I ON %s (request_id, position, layer)', left(part_name, 50) || '_request_key', part);
            END
            $fn$;

            COMMENT ON FUNCTION dancemoe_key_routing_partition(regclass) IS 'Gives a partition of routing_events its unique key on (request_id, position, layer), first removing rows stored twice (the earliest kept) and their activations.';
            REVOKE EXECUTE ON FUNCTION dancemoe_key_routing_partition(regclass) FROM PUBLIC;

            SELECT dancemoe_key_routing_partition(inhrelid::regclass) FROM pg_inherits WHERE inhparent = 'routing_events'::regclass;

            """;

        private static string CreatePartitionsSql(string keyNewPartition) => $"""
            CREATE OR REPLACE FUNCTION dancemoe_create_routing_partitions(from_day date, days integer)
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
                    {keyNewPartition}
                    EXECUTE format('COMMENT ON TABLE %I IS %L', part, 'routing_events of ' || to_char(day, 'YYYY-MM-DD') || ' (UTC)');
                    RETURN NEXT part;
                END LOOP;
            END
            $fn$;
            """;

        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.Sql(UpSql);
            migrationBuilder.Sql(CreatePartitionsSql("PERFORM dancemoe_key_routing_partition(part::regclass);"));

            // The partitions' keys hold every row the old key held, and (request_id, ...) lookups use them: one index to update per row, not two.
            migrationBuilder.DropPrimaryKey(
                name: "pk_routing_events",
                table: "routing_events");
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.Sql("""
                DO $do$
                DECLARE
                    key regclass;
                BEGIN
                    FOR key IN SELECT x.indexrelid::regclass FROM pg_inherits i JOIN pg_index x ON x.indrelid = i.inhrelid
                               JOIN pg_class c ON c.oid = x.indexrelid
                               WHERE i.inhparent = 'routing_events'::regclass AND c.relname LIKE '%\_request\_key' LOOP
                        EXECUTE format('DROP INDEX %s', key);
                    END LOOP;
                END
                $do$;
                """);
            migrationBuilder.AddPrimaryKey(
                name: "pk_routing_events",
                table: "routing_events",
                columns: new[] { "request_id", "position", "layer", "recorded_at" });
            migrationBuilder.Sql(CreatePartitionsSql(""));
            migrationBuilder.Sql("DROP FUNCTION dancemoe_key_routing_partition(regclass);");
        }
    }
}
