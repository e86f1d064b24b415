using System;
using Microsoft.EntityFrameworkCore.Migrations;
using Npgsql.EntityFrameworkCore.PostgreSQL.Metadata;

#nullable disable

namespace DanceMoE.Migrations.Migrations
{
    /// <inheritdoc />
    public partial class PlacementDecisions : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.CreateTable(
                name: "placement_decisions",
                columns: table => new
                {
                    id = table.Column<long>(type: "bigint", nullable: false)
                        .Annotation("Npgsql:ValueGenerationStrategy", NpgsqlValueGenerationStrategy.IdentityAlwaysColumn),
                    decided_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: false, comment: "When the job decided."),
                    trigger = table.Column<string>(type: "character varying(16)", maxLength: 16, nullable: false, comment: "schedule (cron) or run-now."),
                    command_id = table.Column<Guid>(type: "uuid", nullable: true, comment: "Id of the RunPlacementNow command that asked for the run, if any."),
                    algorithm = table.Column<string>(type: "character varying(32)", maxLength: 32, nullable: false, comment: "Placement algorithm the job ran."),
                    current_version = table.Column<int>(type: "integer", nullable: true, comment: "placements.version active when the job ran."),
                    candidate_version = table.Column<int>(type: "integer", nullable: true, comment: "placements.version of the candidate (the current one when they are equal)."),
                    decision = table.Column<string>(type: "character varying(16)", maxLength: 16, nullable: false, comment: "migrate, stay or skipped."),
                    status = table.Column<string>(type: "character varying(16)", maxLength: 16, nullable: false, comment: "activated (switched directly: every expert already loaded where it goes), pending-saga (experts must move first) or none."),
                    reason = table.Column<string>(type: "text", nullable: false, comment: "Why, in words."),
                    current_cost_seconds = table.Column<double>(type: "double precision", nullable: true, comment: "Remote-call seconds over the horizon with the current placement."),
                    candidate_cost_seconds = table.Column<double>(type: "double precision", nullable: true, comment: "Remote-call seconds over the horizon with the candidate."),
                    migration_cost_seconds = table.Column<double>(type: "double precision", nullable: true, comment: "Seconds to transfer the experts that move (T_mig)."),
                    predicted_gain_seconds = table.Column<double>(type: "double precision", nullable: true, comment: "current - candidate - migration cost; the rule migrates when it is positive."),
                    loads = table.Column<int>(type: "integer", nullable: true, comment: "Expert loads the migration needs."),
                    unloads = table.Column<int>(type: "integer", nullable: true, comment: "Expert unloads the migration needs."),
                    bytes_moved = table.Column<long>(type: "bigint", nullable: true, comment: "Expert bytes the migration transfers."),
                    window_from = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: false, comment: "Start of the activation window read."),
                    window_to = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: false, comment: "End of the activation window read."),
                    edges = table.Column<string[]>(type: "text[]", nullable: false, comment: "Live edges the placement was computed for, in server order."),
                    solve_milliseconds = table.Column<double>(type: "double precision", nullable: false, comment: "Time the algorithm took.")
                },
                constraints: table =>
                {
                    table.PrimaryKey("pk_placement_decisions", x => x.id);
                },
                comment: "Every run of the placement job: the candidate placement, the migration rule's inputs and its decision.");

            migrationBuilder.CreateIndex(
                name: "ix_placement_decisions_command_id",
                table: "placement_decisions",
                column: "command_id");

            migrationBuilder.CreateIndex(
                name: "ix_placement_decisions_decided_at",
                table: "placement_decisions",
                column: "decided_at");
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropTable(
                name: "placement_decisions");
        }
    }
}
