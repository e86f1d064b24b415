using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace DanceMoE.Migrations.Migrations
{
    /// <inheritdoc />
    public partial class EdgeHeartbeatInterval : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AddColumn<double>(
                name: "heartbeat_seconds",
                table: "edge_servers",
                type: "double precision",
                nullable: false,
                defaultValue: 0.0,
                comment: "How often the edge said it sends heartbeats, in seconds (0: it did not say); when longer than the coordinator's interval, missed heartbeats are counted by it.");
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropColumn(
                name: "heartbeat_seconds",
                table: "edge_servers");
        }
    }
}
