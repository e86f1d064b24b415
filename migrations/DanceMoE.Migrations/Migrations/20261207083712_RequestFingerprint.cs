using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace DanceMoE.Migrations.Migrations
{
    /// <inheritdoc />
    public partial class RequestFingerprint : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AddColumn<byte[]>(
                name: "fingerprint",
                table: "requests",
                type: "bytea",
                maxLength: 16,
                nullable: true,
                comment: "First 16 bytes of a SHA-256 of what the answer depends on (prompt token ids, max tokens, sampling, seed, replayed request, workload tag): a retry under the same id has the same; null in rows from before edges stored it.");
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropColumn(
                name: "fingerprint",
                table: "requests");
        }
    }
}
