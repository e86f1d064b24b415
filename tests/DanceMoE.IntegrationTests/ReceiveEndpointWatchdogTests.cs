using DanceMoE.Hosting;
using MassTransit;
using Microsoft.Extensions.Logging.Abstractions;

namespace DanceMoE.IntegrationTests;

/// <summary>Which receive endpoints the watchdog restarts, from the events MassTransit reports, on a clock the test moves.</summary>
public sealed class ReceiveEndpointWatchdogTests
{
    private static readonly Uri Requests = new("rabbitmq://localhost/vhost/edge-1");
    private static readonly Uri Control = new("rabbitmq://localhost/vhost/edge-1-control");

    [Fact]
    public async Task An_endpoint_still_down_after_another_came_back_is_restarted_once_it_was_down_long_enough()
    {
        var clock = new ManualClock();
        var watchdog = new ReceiveEndpointWatchdog(NullLogger<ReceiveEndpointWatchdog>.Instance, clock);
        await watchdog.Ready(new Event(Requests));
        await watchdog.Ready(new Event(Control));

        await watchdog.Faulted(new Event(Requests));
        await watchdog.Completed(new Event(Control));
        clock.Advance(TimeSpan.FromSeconds(2));
        await watchdog.Ready(new Event(Requests));
        clock.Advance(ReceiveEndpointWatchdog.StuckAfter - TimeSpan.FromSeconds(3));
        Assert.Empty(watchdog.Stuck(clock.GetUtcNow()));

        clock.Advance(TimeSpan.FromSeconds(2));
        Assert.Equal([Control], watchdog.Stuck(clock.GetUtcNow()));
    }

    [Fact]
    public async Task Endpoints_all_down_together_are_left_to_MassTransit_until_the_longer_bound()
    {
        var clock = new ManualClock();
        var watchdog = new ReceiveEndpointWatchdog(NullLogger<ReceiveEndpointWatchdog>.Instance, clock);
        await watchdog.Ready(new Event(Requests));
        await watchdog.Ready(new Event(Control));
        await watchdog.Completed(new Event(Requests));
        await watchdog.Completed(new Event(Control));

        clock.Advance(ReceiveEndpointWatchdog.AloneStuckAfter - TimeSpan.FromSeconds(1));
        Assert.Empty(watchdog.Stuck(clock.GetUtcNow()));
        clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(2, watchdog.Stuck(clock.GetUtcNow()).Count);
    }

    [Fact]
    public async Task An_endpoint_stopped_on_purpose_is_never_restarted()
    {
        var clock = new ManualClock();
        var watchdog = new ReceiveEndpointWatchdog(NullLogger<ReceiveEndpointWatchdog>.Instance, clock);
        await watchdog.Ready(new Event(Requests));
        await watchdog.Ready(new Event(Control));
        await watchdog.Stopping(new Event(Control));
        await watchdog.Completed(new Event(Control));
        await watchdog.Ready(new Event(Requests));

        clock.Advance(ReceiveEndpointWatchdog.AloneStuckAfter * 2);
        Assert.Empty(watchdog.Stuck(clock.GetUtcNow()));
    }

    [Fact]
    public async Task An_endpoint_reported_consuming_whose_queue_has_had_no_consumer_at_the_broker_long_enough_is_restarted()
    {
        var clock = new ManualClock();
        var watchdog = new ReceiveEndpointWatchdog(NullLogger<ReceiveEndpointWatchdog>.Instance, clock);
        await watchdog.Ready(new Event(Requests));
        await watchdog.Ready(new Event(Control));

        watchdog.Observed(Requests, consumedAtBroker: true, clock.GetUtcNow());
        watchdog.Observed(Control, consumedAtBroker: false, clock.GetUtcNow());
        clock.Advance(ReceiveEndpointWatchdog.AloneStuckAfter - TimeSpan.FromSeconds(1));
        watchdog.Observed(Control, consumedAtBroker: null, clock.GetUtcNow());
        Assert.Empty(watchdog.Stuck(clock.GetUtcNow()));

        clock.Advance(TimeSpan.FromSeconds(1));
        watchdog.Observed(Control, consumedAtBroker: false, clock.GetUtcNow());
        Assert.Equal([Control], watchdog.Stuck(clock.GetUtcNow()));
    }

    [Fact]
    public async Task A_consumer_seen_again_at_the_broker_or_a_new_ready_clears_what_the_broker_showed_before()
    {
        var clock = new ManualClock();
        var watchdog = new ReceiveEndpointWatchdog(NullLogger<ReceiveEndpointWatchdog>.Instance, clock);
        await watchdog.Ready(new Event(Requests));
        await watchdog.Ready(new Event(Control));
        watchdog.Observed(Requests, consumedAtBroker: false, clock.GetUtcNow());
        watchdog.Observed(Control, consumedAtBroker: false, clock.GetUtcNow());

        clock.Advance(TimeSpan.FromSeconds(2));
        watchdog.Observed(Requests, consumedAtBroker: true, clock.GetUtcNow());
        await watchdog.Ready(new Event(Control));
        clock.Advance(ReceiveEndpointWatchdog.AloneStuckAfter);
        Assert.Empty(watchdog.Stuck(clock.GetUtcNow()));
    }

    [Fact]
    public async Task What_the_broker_shows_of_an_endpoint_MassTransit_reports_down_changes_nothing()
    {
        var clock = new ManualClock();
        var watchdog = new ReceiveEndpointWatchdog(NullLogger<ReceiveEndpointWatchdog>.Instance, clock);
        await watchdog.Ready(new Event(Requests));
        await watchdog.Ready(new Event(Control));
        await watchdog.Completed(new Event(Control));

        watchdog.Observed(Control, consumedAtBroker: false, clock.GetUtcNow());
        clock.Advance(ReceiveEndpointWatchdog.StuckAfter);
        Assert.Empty(watchdog.Stuck(clock.GetUtcNow()));
    }

    private sealed class Event(Uri inputAddress) : ReceiveEndpointReady, ReceiveEndpointCompleted, ReceiveEndpointFaulted, ReceiveEndpointStopping
    {
        public Uri InputAddress { get; } = inputAddress;

        // Only a restart uses it, which these tests do not reach.
        public IReceiveEndpoint ReceiveEndpoint => null!;

        public bool IsStarted => true;

        public long DeliveryCount => 0;

        public long ConcurrentDeliveryCount => 0;

        public Exception Exception { get; } = new OperationCanceledException("a call in flight when the connection dropped");

        public bool Removed => false;
    }
}
