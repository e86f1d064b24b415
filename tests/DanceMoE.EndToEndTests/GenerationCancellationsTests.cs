using DanceMoE.Edge;

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
}
