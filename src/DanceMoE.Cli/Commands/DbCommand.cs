using System.CommandLine;
using DanceMoE.Cli.Verbs;

namespace DanceMoE.Cli.Commands;

/// <summary><c>dancemoe db migrate</c>: applies the EF Core migrations; safe to run twice.</summary>
public static class DbCommand
{
    public static Command Create()
    {
        var wait = CliOptions.Int("wait-seconds", 30, "how long to wait for PostgreSQL to accept connections", 0, 3600);
        var migrate = new Command("migrate", "apply the EF Core migrations to ConnectionStrings__postgres; safe to run twice") { wait };
        migrate.SetAction((result, cancellationToken) => RunAsync(TimeSpan.FromSeconds(result.GetValue(wait)), cancellationToken));
        return new Command("db", "the cluster's PostgreSQL database") { migrate };
    }

    private static async Task<int> RunAsync(TimeSpan wait, CancellationToken cancellationToken)
    {
        var result = await LocalDatabase.MigrateAsync(CliEnvironment.PostgresUrl, wait, cancellationToken).ConfigureAwait(false);
        Console.WriteLine(result.Applied.Count == 0
            ? $"database is up to date ({result.AllApplied.Count} migrations applied)"
            : $"applied {result.Applied.Count} migration(s): {string.Join(", ", result.Applied)}");
        return ExitCodes.Ok;
    }
}
