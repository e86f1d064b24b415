using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace DanceMoE.Traces;

/// <summary>
/// One edge's trace writer. <c>Add</c> validates and copies a record into a bounded in-memory queue (past it, into an
/// append-only spill file) and returns; a background flusher writes batches by binary COPY every
/// <see cref="TraceWriterOptions.FlushInterval"/> or when a batch is full. When PostgreSQL is down or slow the batch
/// in hand is retried with backoff, memory fills, then rows spill to disk; on recovery everything is replayed.
/// Inserts skip rows already stored, so a replay writes and counts nothing twice.
/// Every row that enters memory is appended to a journal as well (spill segments in <c>journal/</c>), and
/// <see cref="Persist"/> pushes the journal to the operating system: a process killed after it keeps its rows, which
/// the next writer of the edge replays. A journal segment is deleted once every row in it is committed.
/// <code>
/// token loop --Add--> memory queue --(full)--> spill segments (and, at start, the journal of a killed run)
///              |           |                        |
///              +-> journal +--> flusher: batch --> COPY + insert ON CONFLICT DO NOTHING + activation_counts
/// </code>
/// </summary>
public sealed class TraceWriter : ITraceWriter, IAsyncDisposable
{
    private const int SpillBatchesPerRound = 4;
    private const int JournalSegmentRows = 8192;
    private static readonly TimeSpan PartitionCheckInterval = TimeSpan.FromHours(1);

    private readonly TraceWriterOptions _options;
    private readonly ILogger _logger;
    private readonly TraceRecordValidator _validator;
    private readonly ConcurrentQueue<TraceItem> _memory = new();
    private readonly SemaphoreSlim _wake = new(0);
    private readonly CancellationTokenSource _stopping = new();
    private readonly SpillStore _spill;
    private readonly SpillStore _journal;
    private readonly Lock _journalLock = new();
    private readonly TraceBatchWriter _database;
    private readonly Lock _startLock = new();

    private int _memoryCount;
    private int _closed;
    private int _wakeRequested;
    private Task? _loop;

    // Set and cleared by the flusher only; State and FlushAsync read it.
    private volatile InFlightBatch? _inFlight;

    // Completed by the flusher each time it finds nothing left to write, then replaced; FlushAsync waits on it.
    private TaskCompletionSource _drained = NewSignal();
    private int _flushWaiters;

    // Touched by the flusher only.
    private IEnumerator<TraceItem>? _replay;
    private string? _replayPath;
    private TimeSpan _retryDelay;
    private long _nextAttemptMs;
    private long _nextPartitionCheckMs;
    private long _nextStateLogMs;
    private bool _partitionWarningLogged;
    private readonly Queue<(string Path, long LastSequence)> _sealedJournal = new();
    private long _committedSequence;

    // Under _journalLock.
    private long _sequence;
    private long _journalOpenRows;

    private long _rowsAdded;
    private long _rowsWritten;
    private long _rowsDuplicate;
    private long _requestIdConflicts;
    private long _requestsAdded;
    private long _requestsWritten;
    private long _spilledTotal;
    private long _rejected;
    private long _quarantined;
    private long _lost;
    private long _batches;
    private long _failures;
    private long _lastFlushUtcTicks;
    private volatile bool _reachable = true;
    private volatile string? _lastError;

    public TraceWriter(TraceWriterOptions options, ILogger<TraceWriter>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.ThrowIfInvalid();
        _options = options;
        _logger = (ILogger?)logger ?? NullLogger.Instance;
        _validator = new TraceRecordValidator(options);
        _retryDelay = options.RetryDelay;
        var connection = new NpgsqlConnectionStringBuilder(options.ConnectionString)
        {
            Pooling = false,
            Timeout = Math.Max(1, (int)options.ConnectTimeout.TotalSeconds),
            CommandTimeout = Math.Max(1, (int)Math.Ceiling(options.CommandTimeout.TotalSeconds)),
            ApplicationName = $"dancemoe-traces {options.EdgeId}",
        };
        _database = new TraceBatchWriter(connection.ConnectionString, options.EdgeId, options.CommandTimeout);
        _spill = new SpillStore(options.SpillDirectory, options.EdgeId);
        // The journal of a run that was killed holds rows that may never have reached PostgreSQL: replayed like spilled rows.
        var journalDirectory = Path.Combine(options.SpillDirectory, "journal");
        _spill.Adopt(journalDirectory);
        _journal = new SpillStore(journalDirectory, options.EdgeId);
        if (_spill.PendingRows > 0)
        {
            TraceLog.SpillFound(_logger, options.EdgeId, _spill.PendingRows, _spill.Directory, null);
        }
    }

    public string EdgeId => _options.EdgeId;

    public TraceWriterState State
    {
        get
        {
            var nowMs = Environment.TickCount64;
            var lagMs = 0L;
            if (_memory.TryPeek(out var oldest))
            {
                lagMs = nowMs - oldest.AddedAtMs;
            }

            var inFlight = _inFlight;
            if (inFlight is not null && inFlight.OldestAddedAtMs > 0)
            {
                lagMs = Math.Max(lagMs, nowMs - inFlight.OldestAddedAtMs);
            }

            var lag = TimeSpan.FromMilliseconds(Math.Max(0, lagMs));
            if (_spill.PendingRows > 0 && _spill.OldestTicks is > 0 and var spillTicks)
            {
                var spillLag = TimeSpan.FromTicks(Math.Max(0, DateTime.UtcNow.Ticks - spillTicks));
                lag = spillLag > lag ? spillLag : lag;
            }

            var lastFlush = Interlocked.Read(ref _lastFlushUtcTicks);
            return new TraceWriterState
            {
                EdgeId = _options.EdgeId,
                RowsAdded = Interlocked.Read(ref _rowsAdded),
                RowsWritten = Interlocked.Read(ref _rowsWritten),
                RowsDuplicate = Interlocked.Read(ref _rowsDuplicate),
                RequestIdConflicts = Interlocked.Read(ref _requestIdConflicts),
                RequestsAdded = Interlocked.Read(ref _requestsAdded),
                RequestsWritten = Interlocked.Read(ref _requestsWritten),
                Pending = Volatile.Read(ref _memoryCount) + (inFlight is { FromSpill: false } ? inFlight.Items.Count : 0),
                Spilled = _spill.PendingRows,
                SpilledTotal = Interlocked.Read(ref _spilledTotal),
                Rejected = Interlocked.Read(ref _rejected),
                Quarantined = Interlocked.Read(ref _quarantined),
                Lost = Interlocked.Read(ref _lost),
                Batches = Interlocked.Read(ref _batches),
                FlushFailures = Interlocked.Read(ref _failures),
                DatabaseReachable = _reachable,
                Lag = lag,
                LastFlushAt = lastFlush == 0 ? null : new DateTimeOffset(lastFlush, TimeSpan.Zero),
                LastError = _lastError,
            };
        }
    }

    /// <summary>Starts the background flusher (idempotent). Records added before it wait in the buffer.</summary>
    public void Start()
    {
        lock (_startLock)
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _closed) != 0, this);
            _loop ??= Task.Run(LoopAsync);
        }
    }

    public bool TryAdd(RoutingRecord record) => Enqueue(ValidateRouting(record), spillWhenFull: false);

    public void Add(RoutingRecord record) => Enqueue(ValidateRouting(record), spillWhenFull: true);

    public void Add(RequestSummary summary)
    {
        RequestRow row;
        try
        {
            row = _validator.ToRow(summary, DateTimeOffset.UtcNow);
        }
        catch (InvalidTraceRecordException)
        {
            Interlocked.Increment(ref _rejected);
            throw;
        }

        Enqueue(row, spillWhenFull: true);
    }

    /// <summary>
    /// Pushes every row added so far to the operating system (journal and spill file, no fsync): a process killed after
    /// this call keeps them, and its next run writes them. The edge calls it before it answers a request.
    /// </summary>
    public void Persist()
    {
        try
        {
            _journal.Flush();
            _spill.Flush();
        }
        catch (IOException ex)
        {
            _lastError = ex.Message;
        }
    }

    /// <summary>Waits until everything added so far is in PostgreSQL (memory, batch in hand and spill files empty).</summary>
    public async Task FlushAsync(CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _flushWaiters);
        try
        {
            while (true)
            {
                // Taken before the check: a drain the flusher reports after the check completes this very signal.
                var drained = Volatile.Read(ref _drained);
                if (!HasWork())
                {
                    return;
                }

                Wake();
                await drained.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            Interlocked.Decrement(ref _flushWaiters);
        }
    }

    /// <summary>
    /// Writes what it can within <see cref="TraceWriterOptions.ShutdownTimeout"/>, spills the rest, releases the spill
    /// directory. Stop adding first: an <c>Add</c> racing with disposal may be dropped.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
        {
            return;
        }

        Task? loop;
        lock (_startLock)
        {
            loop = _loop;
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        if (loop is not null)
        {
            await loop.ConfigureAwait(false);
        }
        else
        {
            await ShutdownAsync().ConfigureAwait(false);
        }

        _spill.Dispose();
        _journal.Dispose();
        await _database.DisposeAsync().ConfigureAwait(false);
        _stopping.Dispose();
        _wake.Dispose();
    }

    private RoutingRow ValidateRouting(RoutingRecord record)
    {
        try
        {
            return _validator.ToRow(record, DateTimeOffset.UtcNow);
        }
        catch (InvalidTraceRecordException)
        {
            Interlocked.Increment(ref _rejected);
            throw;
        }
    }

    private bool Enqueue(TraceItem item, bool spillWhenFull)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _closed) != 0, this);
        var count = Interlocked.Increment(ref _memoryCount);
        if (count <= _options.BufferCapacity)
        {
            lock (_journalLock)
            {
                item.Sequence = ++_sequence;
                Journal(item);
                _memory.Enqueue(item);
            }

            if (count == _options.BatchSize)
            {
                Wake();
            }
        }
        else
        {
            Interlocked.Decrement(ref _memoryCount);
            if (!spillWhenFull)
            {
                return false;
            }

            if (!TrySpill(item))
            {
                return false;
            }
        }

        Interlocked.Increment(ref item is RoutingRow ? ref _rowsAdded : ref _requestsAdded);
        return true;
    }

    /// <summary>Appends to the journal (under <see cref="_journalLock"/>); a journal that fails (disk full) costs durability, never the row.</summary>
    private void Journal(TraceItem item)
    {
        try
        {
            _journal.Append(item);
            _journalOpenRows++;
        }
        catch (IOException ex)
        {
            _lastError = ex.Message;
        }
    }

    /// <summary>
    /// Seals the open journal segment once it is large, and deletes the sealed ones whose rows are all committed (the
    /// flusher commits memory in journal order, so the last committed sequence covers every row before it).
    /// </summary>
    private void TrimJournal()
    {
        lock (_journalLock)
        {
            if (_journalOpenRows >= JournalSegmentRows && _journal.SealOpen() is { } sealedPath)
            {
                _sealedJournal.Enqueue((sealedPath, _sequence));
                _journalOpenRows = 0;
            }
        }

        while (_sealedJournal.TryPeek(out var oldest) && oldest.LastSequence <= _committedSequence)
        {
            _sealedJournal.Dequeue();
            _journal.Complete(oldest.Path, corrupt: false);
        }
    }

    /// <summary>At a clean stop every row is committed or spilled: the journal has nothing left to guard.</summary>
    private void ClearJournal()
    {
        lock (_journalLock)
        {
            foreach (var segment in _journal.Seal())
            {
                _journal.Complete(segment, corrupt: false);
            }

            _sealedJournal.Clear();
            _journalOpenRows = 0;
        }
    }

    private bool TrySpill(TraceItem item)
    {
        try
        {
            _spill.Append(item);
        }
        catch (IOException ex)
        {
            // Disk full or gone: the token loop must go on; the loss is counted and logged, never silent.
            var lost = Interlocked.Increment(ref _lost);
            if (lost == 1 || lost % 10_000 == 0)
            {
                TraceLog.Lost(_logger, _options.EdgeId, lost, ex.Message, null);
            }

            _lastError = ex.Message;
            return false;
        }

        Interlocked.Increment(ref _spilledTotal);
        return true;
    }

    private void Wake()
    {
        if (Interlocked.Exchange(ref _wakeRequested, 1) == 0)
        {
            _wake.Release();
        }
    }

    private async Task LoopAsync()
    {
        var stopping = _stopping.Token;
        TraceLog.Started(_logger, _options.EdgeId, _options.BufferCapacity, _options.BatchSize, _options.FlushInterval.TotalMilliseconds, _spill.Directory, null);
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                await _wake.WaitAsync(NextWait(), stopping).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }

            Volatile.Write(ref _wakeRequested, 0);
            while (await RunOnceAsync(stopping).ConfigureAwait(false) && !stopping.IsCancellationRequested)
            {
            }

            SignalWhenDrained();
            LogStateWhenDue();
        }

        await ShutdownAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// The flush interval; while someone waits in <see cref="FlushAsync"/> with rows still to write, as soon as the
    /// retry backoff allows (at least 10 ms apart), so a flush never waits a whole interval for nothing.
    /// </summary>
    private TimeSpan NextWait()
    {
        if (Volatile.Read(ref _flushWaiters) == 0 || !HasWork())
        {
            return _options.FlushInterval;
        }

        var due = TimeSpan.FromMilliseconds(Math.Max(10, _nextAttemptMs - Environment.TickCount64));
        return due < _options.FlushInterval ? due : _options.FlushInterval;
    }

    /// <summary>Releases every <see cref="FlushAsync"/> waiting now when nothing is left to write; later ones wait on a fresh signal.</summary>
    private void SignalWhenDrained()
    {
        if (!HasWork())
        {
            Interlocked.Exchange(ref _drained, NewSignal()).TrySetResult();
        }
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private async Task ShutdownAsync()
    {
        using var deadline = new CancellationTokenSource(_options.ShutdownTimeout);
        _nextAttemptMs = 0;
        while (!deadline.IsCancellationRequested && HasWork())
        {
            var batchesBefore = Interlocked.Read(ref _batches);
            await RunOnceAsync(deadline.Token).ConfigureAwait(false);
            if (Interlocked.Read(ref _batches) == batchesBefore && HasWork())
            {
                var wait = TimeSpan.FromMilliseconds(Math.Max(10, _nextAttemptMs - Environment.TickCount64));
                try
                {
                    await Task.Delay(wait, deadline.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
        }

        // What PostgreSQL did not take goes to disk; rows already in a spill segment stay there.
        if (_inFlight is { FromSpill: false } batch)
        {
            foreach (var item in batch.Items)
            {
                TrySpill(item);
            }
        }

        _inFlight = null;
        _replay?.Dispose();
        _replay = null;
        while (_memory.TryDequeue(out var item))
        {
            Interlocked.Decrement(ref _memoryCount);
            TrySpill(item);
        }

        try
        {
            _spill.Flush();
            ClearJournal();
        }
        catch (IOException ex)
        {
            _lastError = ex.Message;
        }

        SignalWhenDrained();
        var state = State;
        TraceLog.Stopped(_logger, _options.EdgeId, state.RowsWritten, state.Spilled, null);
    }

    /// <summary>Rows in memory, in hand or in spill files. Read in this order: a batch is in hand before it leaves memory.</summary>
    private bool HasWork() => Volatile.Read(ref _memoryCount) > 0 || _inFlight is not null || _spill.PendingRows > 0;

    /// <summary>One round: the batch in hand, then what memory holds, then some spilled rows. True when more is waiting.</summary>
    private async Task<bool> RunOnceAsync(CancellationToken cancellationToken)
    {
        if (Environment.TickCount64 < _nextAttemptMs)
        {
            return false;
        }

        var progressed = false;
        try
        {
            await OpenAsync(cancellationToken).ConfigureAwait(false);
            if (_inFlight is not null)
            {
                await CommitInFlightAsync(cancellationToken).ConfigureAwait(false);
                progressed = true;
            }

            var rounds = (Volatile.Read(ref _memoryCount) / _options.BatchSize) + 1;
            for (var i = 0; i < rounds && TakeFromMemory(); i++)
            {
                await CommitInFlightAsync(cancellationToken).ConfigureAwait(false);
                progressed = true;
            }

            if (_spill.PendingRows > 0)
            {
                _spill.Flush();
                for (var i = 0; i < SpillBatchesPerRound && TakeFromSpill(); i++)
                {
                    await CommitInFlightAsync(cancellationToken).ConfigureAwait(false);
                    progressed = true;
                }
            }

            if (!_reachable)
            {
                _reachable = true;
                TraceLog.Recovered(_logger, _options.EdgeId, _spill.PendingRows, null);
            }

            _retryDelay = _options.RetryDelay;
            return progressed && (Volatile.Read(ref _memoryCount) >= _options.BatchSize || _spill.PendingRows > 0);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Stopping: the batch in hand stays in hand for the shutdown round or the spill file.
            await _database.CloseAsync().ConfigureAwait(false);
            return false;
        }
        catch (Exception ex)
        {
            Interlocked.Increment(ref _failures);
            _lastError = Explained(ex);
            await _database.CloseAsync().ConfigureAwait(false);
            if (_reachable)
            {
                _reachable = false;
                TraceLog.Unreachable(_logger, _options.EdgeId, _lastError, ex);
            }

            _nextAttemptMs = Environment.TickCount64 + (long)_retryDelay.TotalMilliseconds;
            _retryDelay = TimeSpan.FromTicks(Math.Min(_retryDelay.Ticks * 2, _options.MaxRetryDelay.Ticks));
            return false;
        }
    }

    private async Task OpenAsync(CancellationToken cancellationToken)
    {
        if (!_database.IsOpen)
        {
            await _database.OpenAsync(cancellationToken).ConfigureAwait(false);
            _nextPartitionCheckMs = 0;
        }

        if (Environment.TickCount64 >= _nextPartitionCheckMs)
        {
            _nextPartitionCheckMs = Environment.TickCount64 + (long)PartitionCheckInterval.TotalMilliseconds;
            try
            {
                var created = await _database.EnsurePartitionsAsync(_options.PartitionDaysAhead, cancellationToken).ConfigureAwait(false);
                if (created > 0)
                {
                    TraceLog.PartitionsCreated(_logger, _options.EdgeId, created, null);
                }
            }
            catch (PostgresException ex) when (!_partitionWarningLogged)
            {
                // Rows still land in routing_events_default; the next run of the function moves them.
                _partitionWarningLogged = true;
                TraceLog.PartitionsFailed(_logger, _options.EdgeId, ex.MessageText, null);
            }
            catch (PostgresException)
            {
            }
        }
    }

    private bool TakeFromMemory()
    {
        if (Volatile.Read(ref _memoryCount) == 0)
        {
            return false;
        }

        var batch = new List<TraceItem>(Math.Min(_options.BatchSize, Volatile.Read(ref _memoryCount)));
        while (batch.Count < _options.BatchSize && _memory.TryDequeue(out var item))
        {
            batch.Add(item);
        }

        if (batch.Count == 0)
        {
            return false;
        }

        _inFlight = new InFlightBatch(batch, fromSpill: false);
        Interlocked.Add(ref _memoryCount, -batch.Count);
        return true;
    }

    private bool TakeFromSpill()
    {
        while (true)
        {
            if (_replay is null)
            {
                var sealedSegments = _spill.Seal();
                if (sealedSegments.Count == 0)
                {
                    return false;
                }

                var next = sealedSegments[0];
                _replayPath = next;
                _replay = SpillStore.Read(next).GetEnumerator();
            }

            var batch = new List<TraceItem>();
            var finished = false;
            var corrupt = false;
            try
            {
                while (batch.Count < _options.BatchSize)
                {
                    if (!_replay.MoveNext())
                    {
                        finished = true;
                        break;
                    }

                    batch.Add(_replay.Current);
                }
            }
            catch (Exception ex) when (ex is InvalidDataException or IOException)
            {
                // A damaged or vanished segment: keep it aside for a person, write what was read before the damage.
                TraceLog.SpillCorrupt(_logger, _options.EdgeId, _replayPath!, ex.Message, null);
                finished = true;
                corrupt = true;
            }

            if (finished)
            {
                _replay.Dispose();
                _replay = null;
            }

            _inFlight = new InFlightBatch(batch, fromSpill: true, finished ? _replayPath : null, corrupt);
            return true;
        }
    }

    private async Task CommitInFlightAsync(CancellationToken cancellationToken)
    {
        var batch = _inFlight!;
        if (batch.Items.Count > 0)
        {
            // A failed attempt may have committed without us hearing it: later attempts assume rows may be stored.
            var retried = batch.Attempts++ > 0;
            await WriteOrSplitAsync(batch.Items, batch.FromSpill || retried, cancellationToken).ConfigureAwait(false);
            Interlocked.Increment(ref _batches);
            Interlocked.Exchange(ref _lastFlushUtcTicks, DateTime.UtcNow.Ticks);
        }

        if (batch.CompletesSegment is { } done)
        {
            _spill.Complete(done, batch.SegmentCorrupt);
        }

        _inFlight = null;
        if (!batch.FromSpill && batch.Items.Count > 0)
        {
            _committedSequence = batch.Items[^1].Sequence;
            TrimJournal();
        }
    }

    /// <summary>The conflicting request; where its length and tag are the stored one's, only the fingerprints told them apart.</summary>
    private static string Described(RequestIdConflict conflict) =>
        Described(conflict.PromptTokens, conflict.Tag)
        + (conflict.PromptTokens == conflict.StoredPromptTokens && conflict.Tag == conflict.StoredTag ? ", with other prompt tokens or settings" : "");

    private static string Described(int promptTokens, string? tag) =>
        FormattableString.Invariant($"a prompt of {promptTokens} tokens, ") + (tag is null ? "no workload tag" : $"workload tag '{tag}'");

    /// <summary>
    /// Retrying a batch PostgreSQL refuses as data would stop every later row: halve it until the refused rows are
    /// alone, write the others, and set the refused ones aside in a <c>.rejected</c> file.
    /// </summary>
    private async Task WriteOrSplitAsync(List<TraceItem> rows, bool mayBeStored, CancellationToken cancellationToken)
    {
        try
        {
            var outcome = await _database.WriteAsync(rows, mayBeStored, cancellationToken).ConfigureAwait(false);
            Interlocked.Add(ref _rowsWritten, outcome.RoutingInserted);
            Interlocked.Add(ref _rowsDuplicate, outcome.RoutingDuplicates);
            Interlocked.Add(ref _requestsWritten, outcome.RequestsInserted);
            foreach (var conflict in outcome.Conflicts)
            {
                Interlocked.Increment(ref _requestIdConflicts);
                TraceLog.RequestIdConflict(
                    _logger, _options.EdgeId, conflict.RequestId, Described(conflict.StoredPromptTokens, conflict.StoredTag), conflict.StoredBy,
                    Described(conflict), null);
            }
        }
        catch (PostgresException ex) when (IsDataError(ex) && rows.Count > 1)
        {
            var half = rows.Count / 2;
            await WriteOrSplitAsync(rows[..half], mayBeStored, cancellationToken).ConfigureAwait(false);
            await WriteOrSplitAsync(rows[half..], mayBeStored, cancellationToken).ConfigureAwait(false);
        }
        catch (PostgresException ex) when (IsDataError(ex))
        {
            var path = _spill.WriteRejected(rows);
            Interlocked.Add(ref _quarantined, rows.Count);
            _lastError = ex.Message;
            TraceLog.Quarantined(_logger, _options.EdgeId, rows.Count, path, ex.MessageText, null);
        }
    }

    // A table, column or function of ours missing: the database was not migrated to this edge's version (an upgrade that
    // started the edges first). Said so, rather than left to read as an outage; the rows wait as in one.
    private static string Explained(Exception ex) =>
        ex is PostgresException { SqlState: PostgresErrorCodes.UndefinedColumn or PostgresErrorCodes.UndefinedTable or PostgresErrorCodes.UndefinedFunction }
            ? ex.Message + "; the database's schema is older than this edge: run `dancemoe db migrate` against it"
            : ex.Message;

    private static bool IsDataError(PostgresException ex) =>
        ex.SqlState.StartsWith("22", StringComparison.Ordinal) || ex.SqlState.StartsWith("23", StringComparison.Ordinal);

    private void LogStateWhenDue()
    {
        if (_options.StateLogInterval <= TimeSpan.Zero || Environment.TickCount64 < _nextStateLogMs)
        {
            return;
        }

        _nextStateLogMs = Environment.TickCount64 + (long)_options.StateLogInterval.TotalMilliseconds;
        var s = State;
        TraceLog.State(_logger, s.EdgeId, s.RowsWritten, s.Pending, s.Spilled, s.Lag.TotalMilliseconds, s.FlushFailures, null);
    }
}
