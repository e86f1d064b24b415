using System.Globalization;
using System.Text;

namespace DanceMoE.Traces;

/// <summary>
/// The spill files of one edge: append-only segments <c>EDGE.TICKS.SEQ.spill</c> in one directory. Rows go to the
/// open segment when the memory buffer is full or the writer stops with PostgreSQL away; the flusher seals it and
/// replays sealed segments in order, deleting one only after all its rows are committed. A crash between commit
/// and delete replays rows that are already there, which the idempotent insert skips.
/// </summary>
internal sealed class SpillStore : IDisposable
{
    private static readonly byte[] Magic = "DMTRSPL1"u8.ToArray();
    private const byte RoutingKind = 1;
    private const byte RequestKind = 2;

    // Rows with their request's fingerprint at the end; files written before them hold the kinds above, still read.
    private const byte FingerprintedRequestKind = 3;
    private const byte FingerprintedRoutingKind = 4;

    // A request with what crossed the network for it after the fingerprint; kinds 2 and 3 are still read.
    private const byte CommunicatedRequestKind = 5;
    private const int MaxFrameBytes = 1 << 20;

    private readonly Lock _lock = new();
    private readonly string _prefix;
    private readonly FileStream _lockFile;
    private readonly MemoryStream _frame = new();
    private readonly BinaryWriter _frameWriter;
    private readonly Dictionary<string, long> _rows = new(StringComparer.Ordinal);
    private FileStream? _open;
    private string? _openPath;
    private long _sequence;
    private long _pendingRows;
    private bool _disposed;

    public SpillStore(string directory, string edgeId)
    {
        System.IO.Directory.CreateDirectory(directory);
        Directory = directory;
        var safe = new string([.. edgeId.Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' ? c : '_')]);
        _prefix = safe + ".";
        var lockPath = Path.Combine(directory, safe + ".lock");
        try
        {
            _lockFile = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException ex)
        {
            throw new InvalidOperationException($"another trace writer for edge '{edgeId}' holds {lockPath}: one writer per edge and spill directory", ex);
        }

        _frameWriter = new BinaryWriter(_frame, Encoding.UTF8, leaveOpen: true);
        foreach (var segment in Segments())
        {
            var rows = Count(segment);
            _rows[segment] = rows;
            _pendingRows += rows;
        }
    }

    public string Directory { get; }

    /// <summary>Rows in segments not yet completed (replayed and deleted, or set aside).</summary>
    public long PendingRows => Interlocked.Read(ref _pendingRows);

    /// <summary>UTC ticks when the oldest pending segment was started; zero when there is none.</summary>
    public long OldestTicks
    {
        get
        {
            lock (_lock)
            {
                var oldest = _rows.Keys.Order(StringComparer.Ordinal).FirstOrDefault();
                var parts = oldest is null ? [] : Path.GetFileName(oldest).Split('.');
                return parts.Length >= 3 && long.TryParse(parts[^3], CultureInfo.InvariantCulture, out var ticks) ? ticks : 0;
            }
        }
    }

    /// <summary>Sealed and open segments, oldest first.</summary>
    public IReadOnlyList<string> Segments() =>
        [.. System.IO.Directory.EnumerateFiles(Directory, _prefix + "*.spill").Where(p => Path.GetFileName(p).StartsWith(_prefix, StringComparison.Ordinal)).Order(StringComparer.Ordinal)];

    public void Append(TraceItem item)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _frame.SetLength(0);
            Serialize(_frameWriter, item);
            _frameWriter.Flush();
            if (_open is null)
            {
                var path = Path.Combine(Directory, string.Create(CultureInfo.InvariantCulture, $"{_prefix}{DateTime.UtcNow.Ticks:D19}.{++_sequence:D6}.spill"));
                _open = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.Read, 1 << 16);
                _open.Write(Magic);
                _openPath = path;
                _rows[path] = 0;
            }

            Span<byte> length = stackalloc byte[4];
            BitConverter.TryWriteBytes(length, (int)_frame.Length);
            _open.Write(length);
            _open.Write(_frame.GetBuffer(), 0, (int)_frame.Length);
            _rows[_openPath!]++;
            Interlocked.Increment(ref _pendingRows);
        }
    }

    /// <summary>
    /// A sealed segment is done: every row committed (deleted), or unreadable (renamed <c>.corrupt</c> for a person).
    /// Its rows leave <see cref="PendingRows"/> either way.
    /// </summary>
    public void Complete(string path, bool corrupt)
    {
        lock (_lock)
        {
            if (_rows.Remove(path, out var rows))
            {
                Interlocked.Add(ref _pendingRows, -rows);
            }

            try
            {
                if (corrupt)
                {
                    File.Move(path, path + ".corrupt", overwrite: true);
                }
                else
                {
                    File.Delete(path);
                }
            }
            catch (FileNotFoundException)
            {
                // Already gone.
            }
        }
    }

    /// <summary>Pushes appended rows to the operating system, so a crashed process keeps them.</summary>
    public void Flush()
    {
        lock (_lock)
        {
            _open?.Flush();
        }
    }

    /// <summary>Closes the open segment (the next append starts a new one) and returns the sealed segments, oldest first.</summary>
    public IReadOnlyList<string> Seal()
    {
        lock (_lock)
        {
            _open?.Dispose();
            _open = null;
            _openPath = null;
            return [.. _rows.Keys.Order(StringComparer.Ordinal)];
        }
    }

    /// <summary>Closes the open segment, if any, and returns its path (the next append starts a new one).</summary>
    public string? SealOpen()
    {
        lock (_lock)
        {
            var path = _openPath;
            _open?.Dispose();
            _open = null;
            _openPath = null;
            return path;
        }
    }

    /// <summary>
    /// Moves the segments another store of the same edge left in <paramref name="directory"/> into this one, pending like
    /// its own; returns the rows they hold.
    /// </summary>
    public long Adopt(string directory)
    {
        if (!System.IO.Directory.Exists(directory))
        {
            return 0;
        }

        long adopted = 0;
        lock (_lock)
        {
            foreach (var segment in System.IO.Directory.EnumerateFiles(directory, _prefix + "*.spill").Order(StringComparer.Ordinal))
            {
                var target = Path.Combine(Directory, Path.GetFileName(segment));
                File.Move(segment, target);
                var rows = Count(target);
                _rows[target] = rows;
                _pendingRows += rows;
                adopted += rows;
            }
        }

        return adopted;
    }

    /// <summary>Writes rows PostgreSQL refused to their own <c>EDGE.TICKS.rejected</c> file (same format) and returns its path.</summary>
    public string WriteRejected(IReadOnlyList<TraceItem> items)
    {
        lock (_lock)
        {
            var path = Path.Combine(Directory, string.Create(CultureInfo.InvariantCulture, $"{_prefix}{DateTime.UtcNow.Ticks:D19}.{++_sequence:D6}.rejected"));
            using var file = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.Read, 1 << 16);
            file.Write(Magic);
            Span<byte> length = stackalloc byte[4];
            foreach (var item in items)
            {
                _frame.SetLength(0);
                Serialize(_frameWriter, item);
                _frameWriter.Flush();
                BitConverter.TryWriteBytes(length, (int)_frame.Length);
                file.Write(length);
                file.Write(_frame.GetBuffer(), 0, (int)_frame.Length);
            }

            return path;
        }
    }

    /// <summary>Reads a sealed segment; a torn last frame (a crash mid-append) ends it.</summary>
    public static IEnumerable<TraceItem> Read(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 16);
        using var reader = new BinaryReader(stream, Encoding.UTF8);
        var magic = reader.ReadBytes(Magic.Length);
        if (magic.Length < Magic.Length)
        {
            yield break;
        }

        if (!magic.AsSpan().SequenceEqual(Magic))
        {
            throw new InvalidDataException($"{path} is not a trace spill file");
        }

        while (stream.Length - stream.Position >= 4)
        {
            var length = reader.ReadInt32();
            if (length <= 0 || length > MaxFrameBytes)
            {
                throw new InvalidDataException($"{path}: frame of {length} bytes at offset {stream.Position - 4}");
            }

            if (stream.Length - stream.Position < length)
            {
                yield break;
            }

            var end = stream.Position + length;
            var item = Deserialize(reader, path);
            if (stream.Position != end)
            {
                throw new InvalidDataException($"{path}: frame ending at {end} read to {stream.Position}");
            }

            yield return item;
        }
    }

    /// <summary>Whole records in a segment, up to any damage.</summary>
    public static long Count(string path)
    {
        long rows = 0;
        try
        {
            foreach (var unused in Read(path))
            {
                rows++;
            }
        }
        catch (Exception ex) when (ex is InvalidDataException or IOException)
        {
            // Counted up to the damage: what replay will get from it.
        }

        return rows;
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            _open?.Dispose();
            _open = null;
            _frameWriter.Dispose();
            _frame.Dispose();
            _lockFile.Dispose();
        }
    }

    private static void Serialize(BinaryWriter writer, TraceItem item)
    {
        switch (item)
        {
            case RoutingRow r:
                writer.Write(FingerprintedRoutingKind);
                writer.Write(r.RequestId.ToByteArray());
                writer.Write(r.Position);
                writer.Write(r.Layer);
                writer.Write((byte)r.Experts.Length);
                foreach (var e in r.Experts)
                {
                    writer.Write(e);
                }

                foreach (var w in r.GateWeights)
                {
                    writer.Write(w);
                }

                foreach (var s in r.ServedBy)
                {
                    writer.Write(s);
                }

                writer.Write(r.PlacementVersion);
                writer.Write(r.Remote);
                writer.Write(r.RecordedAt.UtcTicks);
                WriteFingerprint(writer, r.RequestFingerprint);
                break;
            case RequestRow q:
                writer.Write(CommunicatedRequestKind);
                writer.Write(q.RequestId.ToByteArray());
                WriteOptional(writer, q.WorkloadTag);
                writer.Write(q.PromptTokens);
                writer.Write(q.GeneratedTokens);
                writer.Write(q.Status);
                WriteOptional(writer, q.Error);
                writer.Write(q.PlacementVersion.HasValue);
                writer.Write(q.PlacementVersion ?? 0);
                writer.Write(q.ReceivedAt.UtcTicks);
                writer.Write(q.FirstTokenAt.HasValue);
                writer.Write(q.FirstTokenAt?.UtcTicks ?? 0);
                writer.Write(q.CompletedAt.UtcTicks);
                WriteFingerprint(writer, q.Fingerprint);
                writer.Write(q.Communication is not null);
                writer.Write(q.Communication?.RemoteBatches ?? 0);
                writer.Write(q.Communication?.RemoteBatchShare ?? 0);
                writer.Write(q.Communication?.RemoteBytes ?? 0);
                writer.Write(q.Communication?.BatchRetries ?? 0);
                break;
            default:
                throw new ArgumentException($"unknown trace item {item.GetType().Name}", nameof(item));
        }
    }

    private static TraceItem Deserialize(BinaryReader reader, string path)
    {
        var kind = reader.ReadByte();
        switch (kind)
        {
            case RoutingKind or FingerprintedRoutingKind:
            {
                var requestId = new Guid(reader.ReadBytes(16));
                var position = reader.ReadInt32();
                var layer = reader.ReadInt16();
                int k = reader.ReadByte();
                var experts = new short[k];
                var weights = new float[k];
                var servedBy = new string[k];
                for (var i = 0; i < k; i++)
                {
                    experts[i] = reader.ReadInt16();
                }

                for (var i = 0; i < k; i++)
                {
                    weights[i] = reader.ReadSingle();
                }

                for (var i = 0; i < k; i++)
                {
                    servedBy[i] = reader.ReadString();
                }

                return new RoutingRow
                {
                    RequestId = requestId,
                    Position = position,
                    Layer = layer,
                    Experts = experts,
                    GateWeights = weights,
                    ServedBy = servedBy,
                    PlacementVersion = reader.ReadInt32(),
                    Remote = reader.ReadBoolean(),
                    RecordedAt = new DateTimeOffset(reader.ReadInt64(), TimeSpan.Zero),
                    RequestFingerprint = kind == FingerprintedRoutingKind ? ReadFingerprint(reader) : null,
                };
            }

            case RequestKind or FingerprintedRequestKind or CommunicatedRequestKind:
            {
                var requestId = new Guid(reader.ReadBytes(16));
                var tag = ReadOptional(reader);
                var prompt = reader.ReadInt32();
                var generated = reader.ReadInt32();
                var status = reader.ReadString();
                var error = ReadOptional(reader);
                var hasVersion = reader.ReadBoolean();
                var version = reader.ReadInt32();
                var received = new DateTimeOffset(reader.ReadInt64(), TimeSpan.Zero);
                var hasFirst = reader.ReadBoolean();
                var first = reader.ReadInt64();
                var completed = new DateTimeOffset(reader.ReadInt64(), TimeSpan.Zero);
                var fingerprint = kind is FingerprintedRequestKind or CommunicatedRequestKind ? ReadFingerprint(reader) : null;
                var communication = kind == CommunicatedRequestKind ? ReadCommunication(reader) : null;
                return new RequestRow
                {
                    RequestId = requestId,
                    WorkloadTag = tag,
                    PromptTokens = prompt,
                    Fingerprint = fingerprint,
                    GeneratedTokens = generated,
                    Status = status,
                    Error = error,
                    PlacementVersion = hasVersion ? version : null,
                    ReceivedAt = received,
                    FirstTokenAt = hasFirst ? new DateTimeOffset(first, TimeSpan.Zero) : null,
                    CompletedAt = completed,
                    Communication = communication,
                };
            }

            default:
                throw new InvalidDataException($"{path}: unknown record kind {kind}");
        }
    }

    private static void WriteFingerprint(BinaryWriter writer, UInt128? fingerprint)
    {
        writer.Write(fingerprint.HasValue);
        writer.Write(RequestFingerprints.ToBytes(fingerprint ?? 0));
    }

    private static UInt128? ReadFingerprint(BinaryReader reader)
    {
        var has = reader.ReadBoolean();
        var fingerprint = RequestFingerprints.FromBytes(reader.ReadBytes(RequestFingerprints.Length));
        return has ? fingerprint : null;
    }

    private static RequestCommunication? ReadCommunication(BinaryReader reader)
    {
        var has = reader.ReadBoolean();
        var communication = new RequestCommunication(reader.ReadInt32(), reader.ReadDouble(), reader.ReadInt64(), reader.ReadInt32());
        return has ? communication : null;
    }

    private static void WriteOptional(BinaryWriter writer, string? value)
    {
        writer.Write(value is not null);
        writer.Write(value ?? "");
    }

    private static string? ReadOptional(BinaryReader reader)
    {
        var present = reader.ReadBoolean();
        var value = reader.ReadString();
        return present ? value : null;
    }
}
