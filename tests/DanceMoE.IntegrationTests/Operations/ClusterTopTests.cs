using DanceMoE.Operations;

namespace DanceMoE.IntegrationTests.Operations;

public sealed class ClusterTopTests
{
    private const string Scrape = """
        # HELP dancemoe_generated_tokens_total tokens
        # TYPE dancemoe_generated_tokens_total counter
        dancemoe_generated_tokens_total 100
        dancemoe_expert_calls_total{locality="local"} 30
        dancemoe_expert_calls_total{locality="remote"} 10
        dancemoe_requests_active 1
        dancemoe_requests_waiting 3
        dancemoe_placement_version 7
        dancemoe_expert_loads_in_progress 2
        dancemoe_request_duration_seconds_bucket{le="0.1"} 50
        dancemoe_request_duration_seconds_bucket{le="1"} 90
        dancemoe_request_duration_seconds_bucket{le="2"} 100
        dancemoe_request_duration_seconds_bucket{le="+Inf"} 100
        dancemoe_request_duration_seconds_sum 40.5
        dancemoe_request_duration_seconds_count 100
        dancemoe_peer_round_trip_seconds_sum{peer="edge-2"} 0.5
        dancemoe_peer_round_trip_seconds_count{peer="edge-2"} 100
        dancemoe_peer_round_trip_seconds_sum{peer="edge-3",note="a \"q\" b"} 0.3
        dancemoe_peer_round_trip_seconds_count{peer="edge-3",note="a \"q\" b"} 10
        this is not a sample
        """;

    [Fact]
    public void The_parser_reads_names_labels_values_and_skips_comments_and_garbage()
    {
        var samples = PrometheusText.Parse(Scrape);

        Assert.Equal(17, samples.Count);
        Assert.Equal(100, PrometheusText.Sum(samples, "dancemoe_generated_tokens_total"));
        Assert.Equal(30, PrometheusText.Sum(samples, "dancemoe_expert_calls_total", ("locality", "local")));
        Assert.Equal(40, PrometheusText.Sum(samples, "dancemoe_expert_calls_total"));
        Assert.Null(PrometheusText.Sum(samples, "absent"));
        var quoted = samples.Single(s => s.Name == "dancemoe_peer_round_trip_seconds_sum" && s.Label("peer") == "edge-3");
        Assert.Equal("a \"q\" b", quoted.Label("note"));
    }

    [Fact]
    public void A_sample_with_a_timestamp_and_special_values_parses()
    {
        var samples = PrometheusText.Parse("a 1.5e3 1700000000000\nb NaN\nc +Inf\nd{} -2\n");

        Assert.Equal(1500, samples[0].Value);
        Assert.True(double.IsNaN(samples[1].Value));
        Assert.True(double.IsPositiveInfinity(samples[2].Value));
        Assert.Equal(-2, samples[3].Value);
        Assert.Empty(samples[3].Labels);
    }

    [Fact]
    public void The_p99_interpolates_within_its_bucket_and_is_null_without_observations()
    {
        var samples = PrometheusText.Parse(Scrape);

        // rank 99 of 100 lies in (1, 2], 9 of its 10 observations in: 1 + 0.9.
        Assert.Equal(1.9, PrometheusText.HistogramQuantile(samples, "dancemoe_request_duration_seconds", 0.99)!.Value, 9);
        Assert.Equal(0.1, PrometheusText.HistogramQuantile(samples, "dancemoe_request_duration_seconds", 0.5)!.Value, 9);
        Assert.Null(PrometheusText.HistogramQuantile(PrometheusText.Parse("h_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 0"), "h", 0.99));
        Assert.Equal(1, PrometheusText.HistogramQuantile(PrometheusText.Parse("h_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 5"), "h", 0.99));
    }

    [Fact]
    public void An_edge_gets_its_rate_local_share_p99_peer_means_and_version()
    {
        var before = PrometheusText.Parse("dancemoe_generated_tokens_total 40\n");
        var now = PrometheusText.Parse(Scrape);

        var edge = ClusterTop.Compute("edge-1", 42, true, before, now, 2.0);

        Assert.True(edge.Up);
        Assert.Equal(30, edge.TokensPerSecond);
        Assert.Equal(100, edge.TokensTotal);
        Assert.Equal(0.75, edge.LocalShare);
        Assert.Equal(1, edge.ActiveRequests);
        Assert.Equal(3, edge.WaitingRequests);
        Assert.Equal(7, edge.PlacementVersion);
        Assert.Equal(2, edge.ExpertsLoading);
        Assert.Equal(1.9, edge.RequestP99Seconds!.Value, 9);
        Assert.Equal(5, edge.PeerRoundTripMs["edge-2"], 9);
        Assert.Equal(30, edge.PeerRoundTripMs["edge-3"], 9);
    }

    [Fact]
    public void Peer_traffic_is_a_rate_over_two_scrapes_and_failed_batches_show_beside_the_round_trips()
    {
        var before = PrometheusText.Parse("""
            dancemoe_peer_batch_bytes_total{peer="edge-2",direction="sent"} 1024
            dancemoe_peer_batch_bytes_total{peer="edge-2",direction="received"} 1024
            """);
        var now = PrometheusText.Parse(Scrape + """

            dancemoe_peer_batch_bytes_total{peer="edge-2",direction="sent"} 11264
            dancemoe_peer_batch_bytes_total{peer="edge-2",direction="received"} 3072
            dancemoe_peer_batch_bytes_total{peer="edge-3",direction="sent"} 4096
            dancemoe_peer_batch_failures_total{peer="edge-2"} 0
            dancemoe_peer_batch_failures_total{peer="edge-3"} 3
            dancemoe_peer_batch_failures_total{peer="edge-4"} 1
            """);

        var edge = ClusterTop.Compute("edge-1", 1, true, before, now, 2.0);
        var row = new TopFrame(DateTimeOffset.UnixEpoch, [edge], "migration: none running").Rows().Single();

        // edge-2: 14336 - 2048 bytes in 2 s; edge-3 was first asked between the scrapes, so all its bytes are new.
        Assert.Equal(6, edge.PeerKibPerSecond!["edge-2"], 9);
        Assert.Equal(2, edge.PeerKibPerSecond["edge-3"], 9);
        Assert.Equal(3, edge.PeerFailures!["edge-3"]);
        Assert.Equal("edge-2=5.00 edge-3=30.00 (3 failed) edge-4=- (1 failed)", row[9]);
        Assert.Equal("edge-2=6.0 edge-3=2.0", row[10]);
        var first = ClusterTop.Compute("edge-1", 1, true, null, now, 0);
        Assert.Equal("-", new TopFrame(DateTimeOffset.UnixEpoch, [first], "").Rows().Single()[10]);
    }

    [Fact]
    public void A_first_scrape_has_no_rate_and_a_restarted_counter_gives_zero()
    {
        var now = PrometheusText.Parse("dancemoe_generated_tokens_total 5\n");

        Assert.Null(ClusterTop.Compute("edge-1", 1, null, null, now, 0).TokensPerSecond);
        Assert.Equal(0, ClusterTop.Compute("edge-1", 1, null, PrometheusText.Parse("dancemoe_generated_tokens_total 50\n"), now, 1).TokensPerSecond);
        Assert.Null(ClusterTop.Compute("edge-1", 1, null, null, now, 0).LocalShare);
    }

    [Fact]
    public void The_text_frame_names_every_edge_shows_down_edges_and_the_migration_line()
    {
        var up = ClusterTop.Compute("edge-1", 11, true, null, PrometheusText.Parse(Scrape), 0);
        var down = new EdgeTop("edge-2", 12, false, null, null, null, null, null, null, null, new Dictionary<string, double>(), null);

        var text = new TopFrame(DateTimeOffset.UnixEpoch, [up, down], "migration: none running").ToText();
        var lines = text.Split(Environment.NewLine);

        Assert.StartsWith("edge-1", lines[2], StringComparison.Ordinal);
        // A migration loads two experts onto it: a balancer, and the operator, see it mid-rebalance.
        Assert.Contains("ready, loading 2", lines[2], StringComparison.Ordinal);
        Assert.Contains("75.0 %", lines[2], StringComparison.Ordinal);
        Assert.Contains("100 total", lines[2], StringComparison.Ordinal);
        Assert.Contains("edge-2=5.00 edge-3=30.00", lines[2], StringComparison.Ordinal);
        Assert.StartsWith("edge-2", lines[3], StringComparison.Ordinal);
        Assert.Contains("down", lines[3], StringComparison.Ordinal);
        Assert.Equal("migration: none running", lines[^1]);
    }

    [Fact]
    public async Task An_edge_that_does_not_answer_is_down_and_an_unreachable_database_is_said_not_a_crash()
    {
        var port = TestPorts.Free();
        using var top = new ClusterTop(new HttpClient { Timeout = TimeSpan.FromSeconds(2) }, FormattableString.Invariant($"postgresql://dancemoe:dancemoe@127.0.0.1:{TestPorts.Free()}/dancemoe"));

        var frame = await top.NextFrameAsync([new LocalEdge("edge-1", 1, port), new LocalEdge("edge-2", 2, null)], CancellationToken.None);

        Assert.All(frame.Edges, e => Assert.False(e.Up));
        Assert.All(frame.Rows(), r => Assert.Equal("down", r[2]));
        Assert.Contains("is not reachable", frame.Migration, StringComparison.Ordinal);
    }
}
