using System;
using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace DanceMoE.Migrations.Migrations
{
    /// <inheritdoc />
    public partial class MigrationSagas : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AlterColumn<string>(
                name: "status",
                table: "placement_decisions",
                type: "character varying(16)",
                maxLength: 16,
                nullable: false,
                comment: "activated (switched directly: every expert already loaded where it goes), pending-saga (a migration moves experts first), migrated or migration-failed (how that migration ended), or none.",
                oldClrType: typeof(string),
                oldType: "character varying(16)",
                oldMaxLength: 16,
                oldComment: "activated (switched directly: every expert already loaded where it goes), pending-saga (experts must move first) or none.");

            migrationBuilder.AddColumn<Guid>(
                name: "migration_id",
                table: "placement_decisions",
                type: "uuid",
                nullable: true,
                comment: "migrations.id of the migration started for this decision, if any.");

            migrationBuilder.CreateTable(
                name: "migrations",
                columns: table => new
                {
                    id = table.Column<Guid>(type: "uuid", nullable: false, comment: "Migration id."),
                    state = table.Column<string>(type: "character varying(32)", maxLength: 32, nullable: false, comment: "Loading, Activating, Draining, Unloading, Compensating (in progress), Completed or Failed."),
                    decision_id = table.Column<long>(type: "bigint", nullable: true, comment: "placement_decisions.id of the decision that started it."),
                    from_version = table.Column<int>(type: "integer", nullable: false, comment: "placements.version active when it started."),
                    to_version = table.Column<int>(type: "integer", nullable: false, comment: "placements.version it moves to."),
                    moves = table.Column<string>(type: "jsonb", nullable: false, comment: "The moves in order: action (load or unload), edge, layer, expert."),
                    move_index = table.Column<int>(type: "integer", nullable: false, comment: "Index of the move in progress (from 0)."),
                    stage = table.Column<int>(type: "integer", nullable: false, comment: "Counter of commands sent; answers and timeouts of older stages are ignored."),
                    deadline_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: true, comment: "When the step in progress times out."),
                    retries = table.Column<int>(type: "integer", nullable: false, comment: "Times the move in progress was sent again after a timeout."),
                    routed = table.Column<string>(type: "jsonb", nullable: false, comment: "Replicas the edges route by now (edge/layer/expert)."),
                    loaded_by_migration = table.Column<string>(type: "jsonb", nullable: false, comment: "Replicas this migration loaded (edge/layer/expert): what compensation unloads."),
                    activated_version = table.Column<int>(type: "integer", nullable: true, comment: "placements.version the migration activated last."),
                    loads_done = table.Column<int>(type: "integer", nullable: false, comment: "Expert loads done."),
                    unloads_done = table.Column<int>(type: "integer", nullable: false, comment: "Expert unloads done."),
                    started_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: false, comment: "When the saga started."),
                    updated_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: false, comment: "When the saga last changed."),
                    finished_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: true, comment: "When it completed or failed."),
                    reason = table.Column<string>(type: "text", nullable: true, comment: "Why it failed, or what compensation did.")
                },
                constraints: table =>
                {
                    table.PrimaryKey("pk_migrations", x => x.id);
                },
                comment: "Every migration saga: the moves that turn one placement into another, how far it got and how it ended.");

            migrationBuilder.CreateIndex(
                name: "ix_migrations_deadline_at",
                table: "migrations",
                column: "deadline_at");

            migrationBuilder.CreateIndex(
                name: "ix_migrations_state",
                table: "migrations",
                column: "state");
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropTable(
                name: "migrations");

            migrationBuilder.DropColumn(
                name: "migration_id",
                table: "placement_decisions");

            migrationBuilder.AlterColumn<string>(
                name: "status",
                table: "placement_decisions",
                type: "character varying(16)",
                maxLength: 16,
                nullable: false,
                comment: "activated (switched directly: every expert already loaded where it goes), pending-saga (experts must move first) or none.",
                oldClrType: typeof(string),
                oldType: "character varying(16)",
                oldMaxLength: 16,
                oldComment: "activated (switched directly: every expert already loaded where it goes), pending-saga (a migration moves experts first), migrated or migration-failed (how that migration ended), or none.");
        }
    }
}
