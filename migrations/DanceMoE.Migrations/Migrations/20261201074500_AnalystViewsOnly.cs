using DanceMoE.Data;
using Microsoft.EntityFrameworkCore.Infrastructure;
using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace DanceMoE.Migrations.Migrations
{
    /// <summary>
    /// Analysts read the views only, never a base table (SQL only: the model does not change). Their logins are
    /// created by the operator (<c>./dancemoe db analyst</c>), never by a migration.
    /// </summary>
    [DbContext(typeof(DanceMoEDbContext))]
    [Migration("20261201074500_AnalystViewsOnly")]
    public partial class AnalystViewsOnly : Migration
    {
        private const string Views = "expert_popularity_hourly, local_ratio_by_placement, expert_coactivation, request_path, request_overview";

        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.Sql($"""
                ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM dancemoe_analyst;
                REVOKE ALL ON ALL TABLES IN SCHEMA public FROM dancemoe_analyst;
                GRANT SELECT ON {Views} TO dancemoe_analyst;
                """);
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.Sql("""
                GRANT SELECT ON ALL TABLES IN SCHEMA public TO dancemoe_analyst;
                ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO dancemoe_analyst;
                """);
        }
    }
}
