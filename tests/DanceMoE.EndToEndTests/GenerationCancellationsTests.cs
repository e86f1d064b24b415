using DanceMoE.Edge;
using DanceMoE.IntegrationTests;

namespace DanceMoE.EndToEndTests;

public sealed class GenerationCancellationsTests
{
    [Fact]
    public void Only_the_requests_sender_cancels_it_and_every_request_of_that_id_from_that_sender_is_cancelled()
    {
        var cancellations = new GenerationCancellations();
        var id = Guid.NewGuid();
        using var first = cancellations.Register(id, "dancemoe-client");
        using var again = cancellations.Register(id, "dancemoe-client");
        using var other = cancellations.Register(id, "someone-else");

        Assert.Equal(CancelOutcome.NotTheSender, cancellations.Cancel(id, "dancemoe-edge"));
        Assert.Equal(CancelOutcome.NotTheSender, cancellations.Cancel(id, null));
        Assert.False(first.Token.IsCancellationRequested);

        Assert.Equal(CancelOutcome.Cancelled, cancellations.Cancel(id, "dancemoe-client"));
        Assert.True(first.Token.IsCancellationRequested);
        Assert.True(again.Token.IsCancellationRequested);
        Assert.False(other.Token.IsCancellationRequested);
    }

    [Fact]
    public void A_request_without_a_sender_cannot_be_cancelled_and_a_finished_one_is_unknown()
    {
        var cancellations = new GenerationCancellations();
        var anonymous = Guid.NewGuid();
        using var unnamed = cancellations.Register(anonymous, null);
        Assert.Equal(CancelOutcome.NotTheSender, cancellations.Cancel(anonymous, null));
        Assert.False(unnamed.Token.IsCancellationRequested);

        var finished = Guid.NewGuid();
        cancellations.Register(finished, "dancemoe-client").Dispose();
        Assert.Equal(CancelOutcome.Unknown, cancellations.Cancel(finished, "dancemoe-client"));
        Assert.Equal(CancelOutcome.Unknown, cancellations.Cancel(Guid.Empty, "dancemoe-client"));
        Assert.Equal(1, cancellations.Count);
    }

    [Fact]
    public void A_cancel_that_overtakes_its_request_cancels_it_on_arrival_only_for_its_sender_and_only_for_a_minute()
    {
        var clock = new ManualClock();
        var cancellations = new GenerationCancellations(clock);
        var id = Guid.NewGuid();
        Assert.Equal(CancelOutcome.Unknown, cancellations.Cancel(id, "dancemoe-client"));
        Assert.Equal(CancelOutcome.Unknown, cancellations.Cancel(id, null));
        Assert.Equal(1, cancellations.EarlyCount);

        using var someoneElses = cancellations.Register(id, "someone-else");
        Assert.False(someoneElses.Token.IsCancellationRequested);
        using var anonymous = cancellations.Register(id, null);
        Assert.False(anonymous.Token.IsCancellationRequested);
        using var overtaken = cancellations.Register(id, "dancemoe-client");
        Assert.True(overtaken.CancelledBeforeArrival);
        Assert.True(overtaken.Token.IsCancellationRequested);

        var late = Guid.NewGuid();
        Assert.Equal(CancelOutcome.Unknown, cancellations.Cancel(late, "dancemoe-client"));
        clock.Advance(GenerationCancellations.EarlyCancelLifetime);
        using var afterAMinute = cancellations.Register(late, "dancemoe-client");
        Assert.False(afterAMinute.CancelledBeforeArrival);
        Assert.False(afterAMinute.Token.IsCancellationRequested);
    }

    [Fact]
    public void A_flood_of_cancels_for_requests_that_never_come_is_held_to_the_limit_oldest_dropped_first()
    {
        var cancellations = new GenerationCancellations(new ManualClock());
        var ids = Enumerable.Range(0, GenerationCancellations.EarlyCancelLimit + 10).Select(_ => Guid.NewGuid()).ToList();
        foreach (var id in ids)
        {
            cancellations.Cancel(id, "flooder");
        }

        Assert.Equal(GenerationCancellations.EarlyCancelLimit, cancellations.EarlyCount);
        using var dropped = cancellations.Register(ids[0], "flooder");
        Assert.False(dropped.Token.IsCancellationRequested);
        using var kept = cancellations.Register(ids[^1], "flooder");
        Assert.True(kept.Token.IsCancellationRequested);
    }
}
