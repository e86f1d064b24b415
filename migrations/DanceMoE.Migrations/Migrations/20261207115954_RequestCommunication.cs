using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace DanceMoE.Migrations.Migrations
{
    /// <inheritdoc />
    public partial class RequestCommunication : Migration
    {
        private const string OverviewColumns = """
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
            """;

        private const string OverviewFrom = """
            FROM requests q
            LEFT JOIN LATERAL (
                SELECT count(*) AS token_layers,
                       count(*) FILTER (WHERE r.remote) AS remote_token_layers,
                       avg(CASE WHEN r.remote THEN 0 ELSE 1 END)::double precision AS layer_local_ratio
                FROM routing_events r
                WHERE r.request_id = q.id
            ) e ON true;
            """;

        private const string OverviewComment = "COMMENT ON VIEW request_overview IS 'One row per finished request: timings in milliseconds, how many of its token-layers needed a round trip, and what crossed the network for it (expert batch messages, its share of them, tensor bytes, retries).';";

        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AddColumn<int>(
                name: "batch_retries",
                table: "requests",
                type: "integer",
                nullable: true,
                comment: "Expert batches of this request retried on another replica after a peer did not answer in time or refused.");

            migrationBuilder.AddColumn<double>(
                name: "remote_batch_share",
                table: "requests",
                type: "double precision",
                nullable: true,
                comment: "This request's share of its remote_batches by its rows in each: summed over requests, the messages sent (a message several requests shared counts once).");

            migrationBuilder.AddColumn<int>(
                name: "remote_batches",
                table: "requests",
                type: "integer",
                nullable: true,
                comment: "Expert batch messages to other edges that carried rows of this request (one per peer per layer per step at most); null in rows from before edges stored it.");

            migrationBuilder.AddColumn<long>(
                name: "remote_bytes",
                table: "requests",
                type: "bigint",
                nullable: true,
                comment: "This request's share of the tensor bytes sent to other edges and received back (hidden rows out, expert outputs in).");

            // New columns go last: CREATE OR REPLACE VIEW keeps the existing ones in place.
            migrationBuilder.Sql($"""
                CREATE OR REPLACE VIEW request_overview AS
                {OverviewColumns},
                       q.remote_batches,
                       q.remote_batch_share,
                       q.remote_bytes,
                       q.batch_retries
                {OverviewFrom}
                {OverviewComment}

                CREATE VIEW communication_by_placement AS
                SELECT origin_edge,
                       placement_version,
                       count(*) AS requests,
                       sum(generated_tokens) AS generated_tokens,
                       sum(remote_batch_share)::double precision AS remote_batches,
                       sum(remote_bytes) AS remote_bytes,
                       sum(batch_retries) AS batch_retries,
                       (sum(remote_batch_share) / NULLIF(sum(generated_tokens), 0))::double precision AS remote_batches_per_token,
                       (sum(remote_bytes) / NULLIF(sum(generated_tokens), 0))::double precision AS remote_bytes_per_token,
                       min(received_at) AS first_received_at,
                       max(completed_at) AS last_completed_at
                FROM requests
                WHERE status = 'completed' AND remote_bytes IS NOT NULL
                GROUP BY origin_edge, placement_version;

                COMMENT ON VIEW communication_by_placement IS 'What crossed the network per origin edge and placement version, over completed requests that recorded it: expert batch messages (each shared message counted once) and tensor bytes, in all and per generated token (prefill included), and batches retried after a peer failed.';

                GRANT SELECT ON communication_by_placement TO dancemoe_analyst;
                """);
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.Sql($"""
                DROP VIEW communication_by_placement;
                DROP VIEW request_overview;
                CREATE VIEW request_overview AS
                {OverviewColumns}
                {OverviewFrom}
                COMMENT ON VIEW request_overview IS 'One row per finished request: timings in milliseconds and how many of its token-layers needed a round trip.';
                GRANT SELECT ON request_overview TO dancemoe_analyst;
                """);

            migrationBuilder.DropColumn(
                name: "batch_retries",
                table: "requests");

            migrationBuilder.DropColumn(
                name: "remote_batch_share",
                table: "requests");

            migrationBuilder.DropColumn(
                name: "remote_batches",
                table: "requests");

            migrationBuilder.DropColumn(
                name: "remote_bytes",
                table: "requests");
        }
    }
}
