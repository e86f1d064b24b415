using System.Diagnostics;
using Microsoft.Extensions.Options;

namespace DanceMoE.Edge;

/// <summary>
/// Emulates this edge's network link on one machine: every expert batch the edge sends or answers
/// waits its one-way delay plus its bytes over the bandwidth before it goes out. An emulation for
/// benchmarks and demos on loopback, not a traffic shaper.
/// </summary>
/// <remarks>
/// <c>Task.Delay</c> cannot emulate a link of a millisecond or two: on a Linux guest it took 4.3 ms for 1 ms (p50 of
/// 200), so an emulated 1 ms link was a 4 ms one. One clock thread per edge releases the transmissions instead: it
/// waits in whole milliseconds on a timed wait (about 0.1 ms late here) and sleeps the last fraction precisely.
/// </remarks>
public sealed class LinkEmulator : IDisposable
{
    private readonly LinkOptions _link;
    private readonly PriorityQueue<TaskCompletionSource, long> _pending = new();
    private readonly CancellationTokenSource _stopping = new();
    private readonly object _gate = new();
    private Thread? _clock;

    public LinkEmulator(IOptions<LinkOptions> options) => _link = options.Value;

    public bool Enabled => _link.DelayMs > 0 || _link.Mbps > 0;

    public TimeSpan CostOf(long bytes) =>
        TimeSpan.FromMilliseconds(_link.DelayMs + (_link.Mbps > 0 ? bytes * 8.0 / (_link.Mbps * 1000.0) : 0));

    /// <summary>Completes once <see cref="CostOf"/> of <paramref name="bytes"/> has passed, never before.</summary>
    public Task TransmitAsync(long bytes, CancellationToken cancellationToken)
    {
        if (!Enabled)
        {
            return Task.CompletedTask;
        }

        cancellationToken.ThrowIfCancellationRequested();
        var due = Stopwatch.GetTimestamp() + (long)Math.Ceiling(CostOf(bytes).TotalSeconds * Stopwatch.Frequency);
        var sent = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_stopping.IsCancellationRequested, this);
            _pending.Enqueue(sent, due);
            _clock ??= StartClock();
            if (_pending.Peek() == sent)
            {
                Monitor.Pulse(_gate);
            }
        }

        // A cancelled wait leaves the batch unsent; the clock releases its entry when due, to nobody.
        return sent.Task.WaitAsync(cancellationToken);
    }

    public void Dispose()
    {
        Thread? clock;
        lock (_gate)
        {
            if (_stopping.IsCancellationRequested)
            {
                return;
            }

            _stopping.Cancel();
            clock = _clock;
            Monitor.Pulse(_gate);
        }

        clock?.Join();
        lock (_gate)
        {
            while (_pending.TryDequeue(out var sent, out _))
            {
                sent.TrySetException(new ObjectDisposedException(nameof(LinkEmulator), "the edge's link emulation stopped"));
            }
        }
    }

    private Thread StartClock()
    {
        var clock = new Thread(RunClock) { IsBackground = true, Name = "link emulation clock" };
        clock.Start();
        return clock;
    }

    private void RunClock()
    {
        while (true)
        {
            TaskCompletionSource? sent = null;
            var remaining = TimeSpan.Zero;
            lock (_gate)
            {
                if (_stopping.IsCancellationRequested)
                {
                    return;
                }

                if (!_pending.TryPeek(out _, out var due))
                {
                    Monitor.Wait(_gate);
                    continue;
                }

                remaining = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), due);
                if (remaining <= TimeSpan.Zero)
                {
                    sent = _pending.Dequeue();
                }
                else if (remaining >= TimeSpan.FromMilliseconds(1))
                {
                    // Whole milliseconds: a timed wait rounds a fraction down. A transmission due sooner pulses the clock.
                    Monitor.Wait(_gate, (int)Math.Min(remaining.TotalMilliseconds, int.MaxValue));
                    continue;
                }
            }

            if (sent is not null)
            {
                sent.TrySetResult();
            }
            else
            {
                // The fraction of a millisecond left: a precise sleep, so the clock neither spins nor rounds up to a
                // whole millisecond (a transmission due sooner than this waits at most the fraction).
                PreciseSleep.For(remaining);
            }
        }
    }
}
