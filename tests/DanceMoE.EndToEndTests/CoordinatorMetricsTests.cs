using System.Globalization;
using System.Net;
using DanceMoE.IntegrationTests;

namespace DanceMoE.EndToEndTests;

public sealed class CoordinatorMetricsTests
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(20) };

    [Fact]
    public async Task A_migration_moves_the_coordinators_counters_and_the_scrape_passes_promtool()
    {
        var port = TestPorts.Free();
        await using var scenario = await MigrationScenario.StartAsync(0, "--metrics-port", port.ToString(CultureInfo.InvariantCulture));
        var url = FormattableString.Invariant($"http://127.0.0.1:{port}");
        var before = MetricsTests.Parse(await Http.GetStringAsync(url + "/metrics"));

        var decision = await scenario.RunPlacementNowAsync();
        Assert.Equal(("migrate", "pending-saga"), (decision.Decision, decision.Status));
        var migration = await scenario.WaitForMigrationAsync(decision.MigrationId!.Value, m => m.CurrentState is "Completed" or "Failed", "the migration ends");
        Assert.True(migration.CurrentState == "Completed", migration.Reason);

        var text = await Http.GetStringAsync(url + "/metrics");
        var after = MetricsTests.Parse(text);
        Assert.Equal((0, 0, 0), (before["dancemoe_migrations_started_total"], before["dancemoe_migrations_completed_total"], before["dancemoe_migrations_failed_total"]));
        Assert.Equal((1, 1, 0), (after["dancemoe_migrations_started_total"], after["dancemoe_migrations_completed_total"], after["dancemoe_migrations_failed_total"]));
        Assert.Equal(1, after["dancemoe_migration_duration_seconds_count{outcome=\"completed\"}"]);
        Assert.Equal(decision.CandidateVersion, (int)after["dancemoe_active_placement_version"]);
        Assert.Equal(2, after["dancemoe_edges_live"]);
        var (exit, output) = await MetricsTests.PromtoolAsync(text);
        Assert.True(exit == 0, $"promtool: {output}\n{text}");
        using var ready = await Http.GetAsync(url + "/readyz");
        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        using var health = await Http.GetAsync(url + "/healthz");
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
    }
}
