using System.CommandLine;
using System.Text.Json;
using DanceMoE.Cli.Verbs;
using DanceMoE.Coordinator;

namespace DanceMoE.Cli.Commands;

/// <summary>
/// <c>dancemoe status</c>: whether a coordinator runs (a consumer on its queue), and the cluster as PostgreSQL records it:
/// edges (live, or stale with how long ago they were heard), the active
/// placement, how local routing was over the last window, the migrations (running, completed, failed with their
/// reasons) and the placement job's latest decisions.
/// </summary>
public static class StatusCommand
{
    public static Command Create()
    {
        var json = CliOptions.Flag("json", "print the state as JSON");
        var window = CliOptions.Double("window-minutes", 10, "routing events the local ratio is computed over", 0.01, 7 * 24 * 60);
        var decisions = CliOptions.Int("decisions", 5, "latest placement decisions to show", 0, 1000);
        var migrations = CliOptions.Int("migrations", 5, "latest migrations to show", 0, 1000);
        var heartbeat = CliOptions.Double("heartbeat-seconds", 2, "the edges' heartbeat interval", 0.1, 3600);
        var missed = CliOptions.Int("missed-heartbeats", 3, "missed heartbeats before an edge counts as stale", 1, 1000);
        var command = new Command("status", "the coordinator (running or not) and the cluster as PostgreSQL records it: edges (live or stale), placement, local ratio, migrations, decisions")
        {
            json, window, decisions, migrations, heartbeat, missed,
        };
        command.SetAction((result, cancellationToken) => RunAsync(
            result.GetValue(json),
            TimeSpan.FromMinutes(result.GetValue(window)),
            result.GetValue(decisions),
            result.GetValue(migrations),
            new MembershipOptions { HeartbeatSeconds = result.GetValue(heartbeat), MissedHeartbeats = result.GetValue(missed) },
            cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(
        bool asJson, TimeSpan window, int decisionCount, int migrationCount, MembershipOptions membership, CancellationToken cancellationToken)
    {
        var report = await ClusterStatus.ReadAsync(CliEnvironment.PostgresUrl, CliEnvironment.OpsRabbitMqUri, window, decisionCount, migrationCount, membership, TimeProvider.System, cancellationToken).ConfigureAwait(false);
        if (asJson)
        {
            Console.WriteLine(JsonSerializer.Serialize(report.ToJson(), StatusFormat.Json));
            return ExitCodes.Ok;
        }

        foreach (var line in report.ToText())
        {
            Console.WriteLine(line);
        }

        return ExitCodes.Ok;
    }
}
