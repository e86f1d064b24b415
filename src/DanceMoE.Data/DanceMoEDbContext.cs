using Microsoft.EntityFrameworkCore;

namespace DanceMoE.Data;

/// <summary>The DanceMoE schema. Tables and columns are snake_case so analysts can query them without quoting.</summary>
public sealed class DanceMoEDbContext(DbContextOptions<DanceMoEDbContext> options) : DbContext(options)
{
    public const string MigrationsAssembly = "DanceMoE.Migrations";
    public const string MigrationsHistoryTable = "ef_migrations_history";

    public DbSet<EdgeServer> EdgeServers => Set<EdgeServer>();

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
        });
    }
}
