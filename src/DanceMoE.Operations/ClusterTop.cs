using System.Globalization;
using DanceMoE.Coordinator.Saga;
using DanceMoE.Data;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace DanceMoE.Operations;

/// <summary>One edge in a <see cref="TopFrame"/>; metrics are null where the edge did not export them (yet).</summary>
public sealed record EdgeTop(
    string Id,
    int Pid,
    bool Up,
    bool? Ready,
    double? ActiveRequests,
    double? WaitingRequests,
    double? TokensPerSecond,
    double? TokensTotal,
    double? LocalShare,
    double? RequestP99Seconds,
    IReadOnlyDictionary<string, double> PeerRoundTripMs,
    double? PlacementVersion,
    double? ExpertsLoading = null,
    IReadOnlyDictionary<string, double>? PeerKibPerSecond = null,
    IReadOnlyDictionary<string, double>? PeerFailures = null);

/// <summary>What <c>dancemoe top</c> shows at one moment.</summary>
public sealed record TopFrame(DateTimeOffset At, IReadOnlyList<EdgeTop> Edges, string Migration)
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static readonly IReadOnlyList<string> Columns =
        ["edge", "pid", "state", "active", "waiting", "tok/s", "local", "p99 ms", "placement", "peer rtt ms", "peer KiB/s"];

    /// <summary>One row of cells per edge, in <see cref="Columns"/> order.</summary>
    public IEnumerable<IReadOnlyList<string>> Rows() => Edges.Select(e => (IReadOnlyList<string>)
    [
        e.Id,
        e.Pid.ToString(Inv),
        (!e.Up ? "down" : e.Ready switch { true => "ready", false => "not ready", null => "up" })
            + (e.Up && e.ExpertsLoading is { } loading && loading > 0 ? ", loading " + loading.ToString("F0", Inv) : ""),
        Number(e.ActiveRequests, "F0"),
        Number(e.WaitingRequests, "F0"),
        e.TokensPerSecond is { } r ? r.ToString("F1", Inv) : e.TokensTotal is { } t ? t.ToString("F0", Inv) + " total" : "-",
        e.LocalShare is { } s ? (s * 100).ToString("F1", Inv) + " %" : "-",
        e.RequestP99Seconds is { } p ? (p * 1000).ToString("F1", Inv) : "-",
        e.PlacementVersion is { } v ? "v" + v.ToString("F0", Inv) : "-",
        PeerCell(e.PeerRoundTripMs, "F2", e.PeerFailures),
        PeerCell(e.PeerKibPerSecond, "F1", null),
    ]);

    /// <summary>The frame as plain text: a header line, an aligned table, the migration line.</summary>
    public string ToText()
    {
        var rows = Rows().ToList();
        var widths = Columns.Select((c, i) => Math.Max(c.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToList();
        var lines = new List<string> { string.Create(Inv, $"dancemoe top {At:u}: {Edges.Count} edges") };
        lines.Add(string.Join("  ", Columns.Select((c, i) => c.PadRight(widths[i]))).TrimEnd());
        lines.AddRange(rows.Select(r => string.Join("  ", r.Select((c, i) => c.PadRight(widths[i]))).TrimEnd()));
        lines.Add(Migration);
        return string.Join(Environment.NewLine, lines);
    }

    private static string Number(double? value, string format) => value is { } v ? v.ToString(format, Inv) : "-";

    // Per peer, in name order; a peer whose batches failed shows how many, with or without a figure of its own.
    private static string PeerCell(IReadOnlyDictionary<string, double>? values, string format, IReadOnlyDictionary<string, double>? failures)
    {
        var peers = (values?.Keys ?? []).Union(failures?.Where(f => f.Value > 0).Select(f => f.Key) ?? [], StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();
        return peers.Count == 0 ? "-" : string.Join(" ", peers.Select(p =>
            p + "=" + (values is not null && values.TryGetValue(p, out var v) ? v.ToString(format, Inv) : "-")
            + (failures is not null && failures.TryGetValue(p, out var f) && f > 0 ? " (" + f.ToString("F0", Inv) + " failed)" : "")));
    }
}

/// <summary>
/// <c>dancemoe top</c>'s data: scrapes each running edge of the <see cref="LocalCluster"/> (<c>/metrics</c>, <c>/readyz</c>)
/// and reads the running migration from PostgreSQL. Rates come from two consecutive scrapes of the same edge.
/// </summary>
public sealed class ClusterTop(HttpClient http, string postgresUrl) : IDisposable
{
    private readonly Dictionary<string, (DateTimeOffset At, IReadOnlyList<PrometheusSample> Samples)> _previous = new(StringComparer.Ordinal);

    public static ClusterTop CreateLocal() =>
        new(new HttpClient { Timeout = TimeSpan.FromSeconds(2) }, LocalEnvironment.PostgresUrl);

    public void Dispose() => http.Dispose();

    /// <summary>Scrapes every edge once and builds a frame; an edge whose process has exited or whose metrics do not answer is down.</summary>
    public async Task<TopFrame> NextFrameAsync(IReadOnlyList<LocalEdge> edges, CancellationToken cancellationToken)
    {
        var tops = await Task.WhenAll(edges.Select(e => EdgeAsync(e, cancellationToken))).ConfigureAwait(false);
        var migration = await MigrationAsync(cancellationToken).ConfigureAwait(false);
        return new TopFrame(DateTimeOffset.UtcNow, tops, migration);
    }

    private async Task<EdgeTop> EdgeAsync(LocalEdge edge, CancellationToken cancellationToken)
    {
        // A dead edge's port may have been taken by another process since: it is not asked.
        var metrics = edge.Alive && edge.MetricsUrl is { } url ? await GetAsync(url, cancellationToken).ConfigureAwait(false) : null;
        var ready = edge.Alive && edge.ReadyUrl is { } readyUrl ? (await GetAsync(readyUrl, cancellationToken).ConfigureAwait(false)) is not null : (bool?)null;
        if (metrics is null)
        {
            _previous.Remove(edge.Id);
            return new EdgeTop(edge.Id, edge.Pid, false, null, null, null, null, null, null, null, new Dictionary<string, double>(), null);
        }

        var now = DateTimeOffset.UtcNow;
        var samples = PrometheusText.Parse(metrics);
        _previous.TryGetValue(edge.Id, out var previous);
        _previous[edge.Id] = (now, samples);
        return Compute(edge.Id, edge.Pid, ready, previous.Samples, samples, (now - previous.At).TotalSeconds);
    }

    /// <summary>The edge's figures from its current samples and, for the token rate, the previous scrape <paramref name="seconds"/> before.</summary>
    public static EdgeTop Compute(string id, int pid, bool? ready, IReadOnlyList<PrometheusSample>? previous, IReadOnlyList<PrometheusSample> current, double seconds)
    {
        var tokens = PrometheusText.Sum(current, "dancemoe_generated_tokens_total");
        double? rate = null;
        if (previous is not null && seconds > 0)
        {
            var before = PrometheusText.Sum(previous, "dancemoe_generated_tokens_total") ?? 0;
            // A restarted edge starts its counters from zero.
            rate = Math.Max(0, (tokens ?? 0) - before) / seconds;
        }

        var local = PrometheusText.Sum(current, "dancemoe_expert_calls_total", ("locality", "local")) ?? 0;
        var remote = PrometheusText.Sum(current, "dancemoe_expert_calls_total", ("locality", "remote")) ?? 0;
        double? share = local + remote > 0 ? local / (local + remote) : null;
        var p99 = PrometheusText.HistogramQuantile(current, "dancemoe_request_duration_seconds", 0.99);
        var roundTrips = PrometheusText.SumBy(current, "dancemoe_peer_round_trip_seconds_sum", "peer");
        var peers = PrometheusText.SumBy(current, "dancemoe_peer_round_trip_seconds_count", "peer").Where(c => c.Value > 0)
            .ToDictionary(c => c.Key, c => roundTrips.GetValueOrDefault(c.Key) / c.Value * 1000, StringComparer.Ordinal);

        var traffic = new Dictionary<string, double>(StringComparer.Ordinal);
        if (previous is not null && seconds > 0)
        {
            var before = PrometheusText.SumBy(previous, "dancemoe_peer_batch_bytes_total", "peer");
            foreach (var (peer, bytes) in PrometheusText.SumBy(current, "dancemoe_peer_batch_bytes_total", "peer"))
            {
                traffic[peer] = Math.Max(0, bytes - before.GetValueOrDefault(peer)) / 1024 / seconds;
            }
        }

        var failures = PrometheusText.SumBy(current, "dancemoe_peer_batch_failures_total", "peer");

        return new EdgeTop(
            id,
            pid,
            true,
            ready,
            PrometheusText.Sum(current, "dancemoe_requests_active"),
            PrometheusText.Sum(current, "dancemoe_requests_waiting"),
            rate,
            tokens,
            share,
            p99,
            peers,
            PrometheusText.Sum(current, "dancemoe_placement_version"),
            PrometheusText.Sum(current, "dancemoe_expert_loads_in_progress"),
            traffic,
            failures);
    }

    private async Task<string?> GetAsync(string url, CancellationToken cancellationToken)
    {
        try
        {
            using var response = await http.GetAsync(new Uri(url), cancellationToken).ConfigureAwait(false);
            return response.IsSuccessStatusCode ? await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false) : null;
        }
        catch (HttpRequestException)
        {
            return null;
        }
        catch (TaskCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return null;
        }
    }

    private async Task<string> MigrationAsync(CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(2));
        try
        {
            await using var db = DanceMoEDbContext.Create(postgresUrl);
            var running = MigrationStateName.Running.ToList();
            var m = await db.Migrations.AsNoTracking().Where(x => running.Contains(x.CurrentState))
                .OrderByDescending(x => x.StartedAt).FirstOrDefaultAsync(timeout.Token).ConfigureAwait(false);
            return m is null ? "migration: none running" : "migration: " + MigrationText(m);
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException or InvalidOperationException
            || (ex is OperationCanceledException && !cancellationToken.IsCancellationRequested))
        {
            return $"migration: unknown, the database at {LocalEnvironment.Redact(postgresUrl)} is not reachable";
        }
    }

    /// <summary>A running migration's progress: state, loads and unloads done of all.</summary>
    public static string MigrationText(MigrationState m)
    {
        var moves = MigrationProgress.Moves(m.Moves);
        var loads = moves.Count(x => x.Action == MigrationProgress.Load);
        return string.Create(
            CultureInfo.InvariantCulture,
            $"v{m.FromVersion} -> v{m.ToVersion} {m.CurrentState}: loads {m.LoadsDone}/{loads}, unloads {m.UnloadsDone}/{moves.Count - loads}, {(DateTimeOffset.UtcNow - m.StartedAt).TotalSeconds:F0} s");
    }
}
