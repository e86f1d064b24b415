using System.Diagnostics;
using DanceMoE.Inference;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DanceMoE.Edge;

/// <summary>
/// The edge's continuous batching: up to <see cref="EdgeOptions.MaxActive"/> requests advance together, one forward
/// step at a time. A step decodes one token for every running request and prefills new ones (at most
/// <see cref="EdgeOptions.MaxStepTokens"/> prompt tokens over all of them); finished, cancelled and late requests leave
/// and waiting ones join between steps. At most <see cref="EdgeOptions.MaxWaiting"/> wait; one more is refused at once.
/// </summary>
public sealed class StepScheduler(IOptions<EdgeOptions> options, MoeForward forward, EdgeModel model, ILogger<StepScheduler> logger) : BackgroundService
{
    private readonly EdgeOptions _options = options.Value;
    private readonly Queue<Generation> _waiting = new();
    private readonly List<Generation> _active = [];
    private readonly SemaphoreSlim _arrived = new(0);
    private readonly object _gate = new();
    private int _activeCount;

    public int ActiveCount => Volatile.Read(ref _activeCount);

    /// <summary>Requests queued for a slot (those that take a free slot at the next step included).</summary>
    public int WaitingCount
    {
        get
        {
            lock (_gate)
            {
                return _waiting.Count;
            }
        }
    }

    /// <summary>Queues a generation and returns when it is done; throws <see cref="EdgeAtCapacityException"/> when the waiting queue is full.</summary>
    public Task<GenerationResult> GenerateAsync(GenerationWork work, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(work);
        var generation = new Generation(work, cancellationToken);
        lock (_gate)
        {
            // Requests queued while a step runs take its free slots at the next step: only those beyond them wait.
            var free = Math.Max(0, _options.MaxActive - ActiveCount);
            if (_waiting.Count >= free + _options.MaxWaiting)
            {
                throw new EdgeAtCapacityException($"{_options.Id} is at capacity: {_waiting.Count - free} waiting, {ActiveCount} active");
            }

            _waiting.Enqueue(generation);
        }

        _arrived.Release();
        return generation.Completion.Task;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                if (_active.Count == 0)
                {
                    await _arrived.WaitAsync(stoppingToken).ConfigureAwait(false);
                }

                Admit();
                Retire();
                if (_active.Count > 0)
                {
                    await StepAsync(stoppingToken).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        finally
        {
            var stopped = new OperationCanceledException($"{_options.Id} is stopping");
            lock (_gate)
            {
                while (_waiting.TryDequeue(out var waiting))
                {
                    waiting.Completion.TrySetException(stopped);
                }
            }

            foreach (var generation in _active)
            {
                generation.State?.Dispose();
                generation.Completion.TrySetException(stopped);
            }

            _active.Clear();
            Volatile.Write(ref _activeCount, 0);
        }
    }

    private void Admit()
    {
        var now = DateTimeOffset.UtcNow;
        lock (_gate)
        {
            while (_active.Count < _options.MaxActive && _waiting.TryDequeue(out var generation))
            {
                if (ReasonToLeave(generation, now, waiting: true) is { } reason)
                {
                    // Given up while waiting: it leaves without ever holding a cache.
                    generation.Completion.TrySetException(reason);
                    continue;
                }

                var work = generation.Work;
                var capacity = Math.Min(forward.Manifest.Architecture.MaxPositions, work.PromptIds.Count + Math.Max(1, work.MaxNewTokens));
                generation.State = forward.NewState(capacity);
                _active.Add(generation);
            }

            Volatile.Write(ref _activeCount, _active.Count);
        }
    }

    /// <summary>
    /// Requests whose client gave up or whose deadline passed leave before the next step, the active ones and the waiting
    /// ones alike: a request given up while it waits frees its place in the waiting queue at once, not when a slot frees.
    /// </summary>
    private void Retire()
    {
        var now = DateTimeOffset.UtcNow;
        for (var i = _active.Count - 1; i >= 0; i--)
        {
            var generation = _active[i];
            if (ReasonToLeave(generation, now, waiting: false) is { } reason)
            {
                Leave(generation, reason);
            }
        }

        lock (_gate)
        {
            for (var n = _waiting.Count; n > 0; n--)
            {
                var generation = _waiting.Dequeue();
                if (ReasonToLeave(generation, now, waiting: true) is { } reason)
                {
                    generation.Completion.TrySetException(reason);
                }
                else
                {
                    _waiting.Enqueue(generation);
                }
            }
        }
    }

    /// <summary>Why <paramref name="generation"/> leaves now (cancelled, or past its deadline), or null when it stays.</summary>
    private static Exception? ReasonToLeave(Generation generation, DateTimeOffset now, bool waiting)
    {
        var cancelled = generation.Cancellation.IsCancellationRequested;
        if (!cancelled && !(generation.Work.Deadline is { } deadline && now > deadline))
        {
            return null;
        }

        var id = generation.Work.Context.RequestId;
        var when = waiting ? "while it waited for a slot" : $"after {generation.Generated.Count} tokens";
        return cancelled
            ? new OperationCanceledException($"request {id} was cancelled {when}")
            : new TimeoutException($"request {id} passed its deadline {when}");
    }

    private async Task StepAsync(CancellationToken stoppingToken)
    {
        var budget = _options.MaxStepTokens;
        var stepping = new List<Generation>(_active.Count);
        var chunks = new List<SequenceChunk>(_active.Count);
        foreach (var generation in _active.Where(g => g.Prefilled == g.Work.PromptIds.Count))
        {
            stepping.Add(generation);
            chunks.Add(new SequenceChunk([generation.Generated[^1]], generation.State!, generation.Work.Context));
        }

        foreach (var generation in _active.Where(g => g.Prefilled < g.Work.PromptIds.Count))
        {
            if (budget == 0)
            {
                break;
            }

            var count = Math.Min(budget, generation.Work.PromptIds.Count - generation.Prefilled);
            budget -= count;
            stepping.Add(generation);
            chunks.Add(new SequenceChunk([.. generation.Work.PromptIds.Skip(generation.Prefilled).Take(count)], generation.State!, generation.Work.Context));
        }

        IReadOnlyList<ChunkResult> results;
        try
        {
            results = await forward.StepAsync(chunks, stoppingToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !stoppingToken.IsCancellationRequested)
        {
            logger.LogError(ex, "a step of {Count} requests failed", stepping.Count);
            foreach (var generation in stepping)
            {
                Leave(generation, ex);
            }

            return;
        }

        var vocab = forward.Manifest.Architecture.VocabSize;
        for (var i = 0; i < stepping.Count; i++)
        {
            var generation = stepping[i];
            if (results[i].Error is { } error)
            {
                Leave(generation, error);
                continue;
            }

            var logits = results[i].Logits!;
            if (generation.Prefilled < generation.Work.PromptIds.Count)
            {
                generation.Prefilled += chunks[i].Tokens.Count;
                if (generation.Prefilled < generation.Work.PromptIds.Count)
                {
                    continue;
                }
            }

            bool done;
            try
            {
                done = generation.Produce(logits.AsSpan(logits.Length - vocab, vocab), model.Tokenizer.EosTokenId);
            }
            catch (NonFiniteLogitsException ex)
            {
                Leave(generation, ex);
                continue;
            }

            if (done)
            {
                Finish(generation);
            }
        }
    }

    private void Finish(Generation generation)
    {
        Remove(generation);
        var seconds = generation.Clock.Elapsed.TotalSeconds;
        generation.Completion.TrySetResult(new GenerationResult(generation.Work.PromptIds, generation.Generated, model.Tokenizer.Decode(generation.Generated),
            seconds, seconds > 0 ? generation.Generated.Count / seconds : 0, generation.StoppedAtEos));
    }

    private void Leave(Generation generation, Exception reason)
    {
        Remove(generation);
        generation.Completion.TrySetException(reason);
    }

    private void Remove(Generation generation)
    {
        generation.State?.Dispose();
        generation.State = null;
        _active.Remove(generation);
        Volatile.Write(ref _activeCount, _active.Count);
    }

    public override void Dispose()
    {
        _arrived.Dispose();
        base.Dispose();
    }

    /// <summary>One request in the scheduler: its cache, its tokens so far and how far its prompt is prefilled.</summary>
    private sealed class Generation(GenerationWork work, CancellationToken cancellation)
    {
        private readonly Sampler _sampler = new(work.Sampling);
        private TimeSpan _previous;

        public GenerationWork Work { get; } = work;

        public CancellationToken Cancellation { get; } = cancellation;

        public TaskCompletionSource<GenerationResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Stopwatch Clock { get; } = Stopwatch.StartNew();

        public KvState? State { get; set; }

        public int Prefilled { get; set; }

        public List<int> Generated { get; } = [];

        public bool StoppedAtEos { get; private set; }

        /// <summary>Samples the next token from the last logits; true when the request is done.</summary>
        public bool Produce(ReadOnlySpan<float> logits, int eos)
        {
            if (Work.MaxNewTokens == 0)
            {
                return true;
            }

            var next = _sampler.Next(logits);
            if (next == eos && !Work.IgnoreEos)
            {
                StoppedAtEos = true;
                return true;
            }

            Generated.Add(next);
            var now = Clock.Elapsed;
            Work.TokenProduced?.Invoke(Generated.Count - 1, now - _previous);
            _previous = now;
            return Generated.Count == Work.MaxNewTokens;
        }
    }
}

/// <summary>What a request asks of the scheduler: its prompt, how much to generate and how, and until when.</summary>
public sealed record GenerationWork(IReadOnlyList<int> PromptIds, int MaxNewTokens, SamplingOptions Sampling, ForwardContext Context)
{
    /// <summary>After this the request leaves the batch at the next step (the client has given up by then).</summary>
    public DateTimeOffset? Deadline { get; init; }

    /// <summary>Decode exactly <see cref="MaxNewTokens"/> tokens, an end-of-sequence token included (a replay's length is the trace's).</summary>
    public bool IgnoreEos { get; init; }

    /// <summary>Hears of each generated token: its index and the time since the previous one (or since the start).</summary>
    public Action<int, TimeSpan>? TokenProduced { get; init; }
}

/// <summary>The edge's waiting queue is full: the request is refused at once.</summary>
public sealed class EdgeAtCapacityException(string message) : Exception(message);
