using System.CommandLine;
using System.Text.RegularExpressions;
using DanceMoE.Cli.Verbs;
using Npgsql;

namespace DanceMoE.Cli.Commands;

/// <summary>
/// <c>dancemoe db migrate</c>: applies the EF Core migrations; safe to run twice. <c>dancemoe db analyst</c>: creates
/// (or updates) an analyst's login, read-only on the views, through the admin connection.
/// </summary>
public static partial class DbCommand
{
    public const string AnalystPasswordVariable = "DANCEMOE_ANALYST_PASSWORD";

    public static Command Create()
    {
        var wait = CliOptions.Int("wait-seconds", 30, "how long to wait for PostgreSQL to accept connections", 0, 3600);
        var migrate = new Command("migrate", "apply the EF Core migrations to ConnectionStrings__postgres; safe to run twice") { wait };
        migrate.SetAction((result, cancellationToken) => RunAsync(TimeSpan.FromSeconds(result.GetValue(wait)), cancellationToken));

        var name = CliOptions.Text("name", "the login to create or update (lower-case letters, digits, _)", required: true, valueName: "NAME");
        name.Validators.Add(result =>
        {
            if (result.Tokens.Count == 1 && !LoginName().IsMatch(result.Tokens[0].Value))
            {
                result.AddError($"--name: '{result.Tokens[0].Value}' is not a login name (lower-case letters, digits and _, at most 63)");
            }
        });
        var passwordFile = CliOptions.Text("password-file", $"file holding the password (else ${AnalystPasswordVariable})", valueName: "FILE");
        var connectionLimit = CliOptions.Int("connection-limit", 4, "sessions the login may hold at once", 1, 1000);
        var statementTimeout = CliOptions.Int("statement-timeout-seconds", 60, "statements running longer are cancelled", 1, 86400);
        var analyst = new Command("analyst", "create or update an analyst's login: reads the views only, with a statement timeout and a connection limit")
        {
            name, passwordFile, connectionLimit, statementTimeout,
        };
        analyst.SetAction((result, cancellationToken) => CreateAnalystAsync(
            result.GetValue(name)!, result.GetValue(passwordFile), result.GetValue(connectionLimit), TimeSpan.FromSeconds(result.GetValue(statementTimeout)), cancellationToken));

        return new Command("db", "the cluster's PostgreSQL database") { migrate, analyst };
    }

    private static async Task<int> RunAsync(TimeSpan wait, CancellationToken cancellationToken)
    {
        var result = await LocalDatabase.MigrateAsync(CliEnvironment.PostgresUrl, wait, cancellationToken).ConfigureAwait(false);
        Console.WriteLine(result.Applied.Count == 0
            ? $"database is up to date ({result.AllApplied.Count} migrations applied)"
            : $"applied {result.Applied.Count} migration(s): {string.Join(", ", result.Applied)}");
        return ExitCodes.Ok;
    }

    private static async Task<int> CreateAnalystAsync(string name, string? passwordFile, int connectionLimit, TimeSpan statementTimeout, CancellationToken cancellationToken)
    {
        var password = passwordFile is null ? Environment.GetEnvironmentVariable(AnalystPasswordVariable) : AdminDatabase.ReadPasswordFile(passwordFile);
        if (string.IsNullOrEmpty(password))
        {
            throw new UsageException($"no password: give --password-file FILE or set {AnalystPasswordVariable}");
        }

        try
        {
            await AdminDatabase.CreateAnalystLoginAsync(CliEnvironment.PostgresUrl, name, password, connectionLimit, statementTimeout, cancellationToken).ConfigureAwait(false);
        }
        catch (NpgsqlException ex)
        {
            throw OperationException.ServiceFailure($"cannot create the analyst login {name}", ex, $"ConnectionStrings__{AdminDatabase.ConnectionName}");
        }

        Console.WriteLine($"login {name}: reads the analyst views, at most {connectionLimit} sessions, statements cut at {statementTimeout.TotalSeconds:0} s");
        return ExitCodes.Ok;
    }

    [GeneratedRegex("^[a-z_][a-z0-9_]{0,62}$")]
    private static partial Regex LoginName();
}
