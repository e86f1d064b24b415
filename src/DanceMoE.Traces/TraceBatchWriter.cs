using Npgsql;
using NpgsqlTypes;

namespace DanceMoE.Traces;

/// <summary>What one committed batch did.</summary>
internal readonly record struct BatchOutcome(
    long RoutingInserted, long RoutingDuplicates, long RequestsInserted, long RequestDuplicates, IReadOnlyList<RequestIdConflict> Conflicts);

/// <summary>
/// A request summary not stored because its id is stored for a request with another prompt length, workload tag or
/// fingerprint (where both have one): not a retry of that request but another one under the same id, whose summary and
/// routing rows are therefore not stored.
/// </summary>
internal readonly record struct RequestIdConflict(Guid RequestId, string StoredBy, int StoredPromptTokens, string? StoredTag, int PromptTokens, string? Tag);

/// <summary>
/// Writes batches over one open connection: binary COPY into session temp tables, then one insert that skips rows
/// already stored (same request, position and layer) and adds only the inserted rows to <c>activation_counts</c>, all in
/// one transaction. A batch written twice, or a request served twice, therefore stores and counts nothing the second time.
/// The key holds on each daily partition only, so a request served again on a later UTC day is caught by its summary:
/// the rows of a request already stored as completed are skipped.
/// </summary>
internal sealed class TraceBatchWriter(string connectionString, string edgeId, TimeSpan commandTimeout) : IAsyncDisposable
{
    private const string CreateStaging = """
        CREATE TEMP TABLE IF NOT EXISTS routing_events_staging (
            request_id uuid, position integer, layer smallint, origin_edge character varying(64), experts smallint[],
            gate_weights real[], served_by text[], placement_version integer, remote boolean, recorded_at timestamptz
        ) ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE IF NOT EXISTS requests_staging (
            id uuid, origin_edge character varying(64), workload_tag character varying(128), prompt_tokens integer, fingerprint bytea,
            generated_tokens integer, status character varying(16), error text, placement_version integer,
            received_at timestamptz, first_token_at timestamptz, completed_at timestamptz,
            remote_batches integer, remote_batch_share double precision, remote_bytes bigint, batch_retries integer
        ) ON COMMIT DELETE ROWS;
        """;

    private const string CopyRouting = """
        COPY routing_events_staging (request_id, position, layer, origin_edge, experts, gate_weights, served_by, placement_version, remote, recorded_at)
        FROM STDIN (FORMAT BINARY)
        """;

    private const string InsertRouting = """
        WITH inserted AS (
            INSERT INTO routing_events (request_id, position, layer, origin_edge, experts, gate_weights, served_by, placement_version, remote, recorded_at)
            SELECT request_id, position, layer, origin_edge, experts, gate_weights, served_by, placement_version, remote, recorded_at
            FROM routing_events_staging
            ON CONFLICT DO NOTHING
            RETURNING origin_edge, layer, experts, recorded_at
        ), counted AS (
            INSERT INTO activation_counts AS a (bucket, origin_edge, layer, expert, count)
            SELECT date_trunc('minute', i.recorded_at, 'UTC'), i.origin_edge, i.layer, e.expert, count(*)
            FROM inserted i CROSS JOIN LATERAL unnest(i.experts) AS e(expert)
            GROUP BY 1, 2, 3, 4
            ORDER BY 1, 2, 3, 4
            ON CONFLICT (bucket, origin_edge, layer, expert) DO UPDATE SET count = a.count + excluded.count
        )
        SELECT count(*) FROM inserted
        """;

    private const string CopyRoutingDirect = """
        COPY routing_events (request_id, position, layer, origin_edge, experts, gate_weights, served_by, placement_version, remote, recorded_at)
        FROM STDIN (FORMAT BINARY)
        """;

    private const string UpsertCounts = """
        INSERT INTO activation_counts AS a (bucket, origin_edge, layer, expert, count)
        SELECT t.bucket, @edge, t.layer, t.expert, t.count
        FROM unnest(@buckets, @layers, @experts, @counts) AS t(bucket, layer, expert, count)
        ORDER BY 1, 3, 4
        ON CONFLICT (bucket, origin_edge, layer, expert) DO UPDATE SET count = a.count + excluded.count
        """;

    private const string CopyRequests = """
        COPY requests_staging (id, origin_edge, workload_tag, prompt_tokens, fingerprint, generated_tokens, status, error, placement_version, received_at, first_token_at, completed_at,
            remote_batches, remote_batch_share, remote_bytes, batch_retries)
        FROM STDIN (FORMAT BINARY)
        """;

    // The first summary of an id stays, but a completed retry of the same request (same fingerprint) replaces one that
    // did not complete: the answer the client got is what the history says.
    private const string InsertRequests = """
        WITH inserted AS (
            INSERT INTO requests AS r (id, origin_edge, workload_tag, prompt_tokens, fingerprint, generated_tokens, status, error, placement_version, received_at, first_token_at, completed_at,
                remote_batches, remote_batch_share, remote_bytes, batch_retries)
            SELECT DISTINCT ON (id) id, origin_edge, workload_tag, prompt_tokens, fingerprint, generated_tokens, status, error, placement_version, received_at, first_token_at, completed_at,
                remote_batches, remote_batch_share, remote_bytes, batch_retries
            FROM requests_staging
            ORDER BY id, status = 'completed' DESC
            ON CONFLICT (id) DO UPDATE SET
                origin_edge = excluded.origin_edge, generated_tokens = excluded.generated_tokens, status = excluded.status,
                error = excluded.error, placement_version = excluded.placement_version, received_at = excluded.received_at,
                first_token_at = excluded.first_token_at, completed_at = excluded.completed_at,
                remote_batches = excluded.remote_batches, remote_batch_share = excluded.remote_batch_share,
                remote_bytes = excluded.remote_bytes, batch_retries = excluded.batch_retries
            WHERE r.status <> 'completed' AND excluded.status = 'completed' AND r.fingerprint = excluded.fingerprint
                AND r.prompt_tokens = excluded.prompt_tokens AND r.workload_tag IS NOT DISTINCT FROM excluded.workload_tag
            RETURNING 1
        )
        SELECT count(*) FROM inserted
        """;

    private const string ConflictingRequests = """
        SELECT s.id, r.origin_edge, r.prompt_tokens, r.workload_tag, s.prompt_tokens, s.workload_tag
        FROM requests_staging s JOIN requests r ON r.id = s.id
        WHERE r.prompt_tokens <> s.prompt_tokens OR r.workload_tag IS DISTINCT FROM s.workload_tag OR r.fingerprint <> s.fingerprint
        ORDER BY s.id
        """;

    private const string StoredRequests = "SELECT id, status = 'completed', fingerprint FROM requests WHERE id = ANY(@ids)";

    private const string EnsurePartitions = "SELECT count(*) FROM dancemoe_create_routing_partitions((now() AT TIME ZONE 'UTC')::date - 1, @days)";

    private NpgsqlConnection? _connection;

    public bool IsOpen => _connection is { State: System.Data.ConnectionState.Open };

    public async Task OpenAsync(CancellationToken cancellationToken)
    {
        if (IsOpen)
        {
            return;
        }

        await CloseAsync().ConfigureAwait(false);
        var connection = new NpgsqlConnection(connectionString);
        try
        {
            await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
            await using var command = new NpgsqlCommand(CreateStaging, connection) { CommandTimeout = Seconds(commandTimeout) };
            await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        _connection = connection;
    }

    /// <summary>Creates the daily partitions from yesterday to <paramref name="daysAhead"/> days ahead; returns how many were missing.</summary>
    public async Task<long> EnsurePartitionsAsync(int daysAhead, CancellationToken cancellationToken)
    {
        var connection = _connection ?? throw new InvalidOperationException("not open");
        await using var command = new NpgsqlCommand(EnsurePartitions, connection) { CommandTimeout = Seconds(commandTimeout) };
        command.Parameters.AddWithValue("days", daysAhead + 2);
        return (long)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    /// <param name="batch">Rows to write.</param>
    /// <param name="mayBeStored">True for rows that may already be in PostgreSQL (a spill replay, a retried batch).</param>
    /// <param name="cancellationToken">Abandons the batch (rolled back).</param>
    public async Task<BatchOutcome> WriteAsync(IReadOnlyList<TraceItem> batch, bool mayBeStored, CancellationToken cancellationToken)
    {
        var connection = _connection ?? throw new InvalidOperationException("not open");
        var routing = batch.OfType<RoutingRow>().ToList();
        var requests = batch.OfType<RequestRow>().ToList();
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        var routingOffered = routing.Count;
        routing = await WithoutStoredRequestsAsync(connection, transaction, routing, cancellationToken).ConfigureAwait(false);
        long routingInserted = 0, requestsInserted = 0;
        if (routing.Count > 0)
        {
            routingInserted = mayBeStored ? -1 : await CopyAllNewAsync(connection, transaction, routing, cancellationToken).ConfigureAwait(false);
            if (routingInserted < 0)
            {
                await CopyRoutingAsync(connection, routing, CopyRouting, cancellationToken).ConfigureAwait(false);
                routingInserted = await ScalarAsync(connection, transaction, InsertRouting, cancellationToken).ConfigureAwait(false);
            }
        }

        if (requests.Count > 0)
        {
            await CopyRequestsAsync(connection, requests, cancellationToken).ConfigureAwait(false);
            requestsInserted = await ScalarAsync(connection, transaction, InsertRequests, cancellationToken).ConfigureAwait(false);
        }

        var conflicts = requestsInserted < requests.Count
            ? await ConflictsAsync(connection, transaction, cancellationToken).ConfigureAwait(false)
            : [];
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        return new BatchOutcome(routingInserted, routingOffered - routingInserted, requestsInserted, requests.Count - requestsInserted, conflicts);
    }

    /// <summary>The staged summaries whose id is stored for another request (a retry repeats its prompt, tag and fingerprint).</summary>
    private async Task<List<RequestIdConflict>> ConflictsAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, CancellationToken cancellationToken)
    {
        var conflicts = new List<RequestIdConflict>();
        await using var command = new NpgsqlCommand(ConflictingRequests, connection, transaction) { CommandTimeout = Seconds(commandTimeout) };
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            conflicts.Add(new RequestIdConflict(
                reader.GetGuid(0), reader.GetString(1), reader.GetInt32(2), reader.IsDBNull(3) ? null : reader.GetString(3),
                reader.GetInt32(4), reader.IsDBNull(5) ? null : reader.GetString(5)));
        }

        return conflicts;
    }

    /// <summary>
    /// The rows whose request is not stored as completed yet (a completed request's rows all came before its summary) nor
    /// stored for another request: a stored summary with another fingerprint than the rows' is another request under
    /// their id, whose rows are the ones the history keeps.
    /// </summary>
    private async Task<List<RoutingRow>> WithoutStoredRequestsAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, List<RoutingRow> rows, CancellationToken cancellationToken)
    {
        if (rows.Count == 0)
        {
            return rows;
        }

        await using var command = new NpgsqlCommand(StoredRequests, connection, transaction) { CommandTimeout = Seconds(commandTimeout) };
        command.Parameters.AddWithValue("ids", NpgsqlDbType.Array | NpgsqlDbType.Uuid, rows.Select(r => r.RequestId).Distinct().ToArray());
        var stored = new Dictionary<Guid, (bool Completed, UInt128? Fingerprint)>();
        await using (var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false))
        {
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                stored[reader.GetGuid(0)] = (reader.GetBoolean(1), reader.IsDBNull(2) ? null : RequestFingerprints.FromBytes(reader.GetFieldValue<byte[]>(2)));
            }
        }

        return stored.Count == 0 ? rows : rows.Where(r => !stored.TryGetValue(r.RequestId, out var request)
            || !(request.Completed || (request.Fingerprint is { } first && r.RequestFingerprint is { } mine && first != mine))).ToList();
    }

    /// <summary>
    /// The common case, a fresh batch: COPY straight into <c>routing_events</c> (no staging, about twice as fast) and
    /// add counts summed here. Returns -1, rolled back to before the COPY, when some row was stored already; the
    /// caller then takes the staging path, which skips stored rows.
    /// </summary>
    private async Task<long> CopyAllNewAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, List<RoutingRow> rows, CancellationToken cancellationToken)
    {
        await transaction.SaveAsync("fresh", cancellationToken).ConfigureAwait(false);
        try
        {
            await CopyRoutingAsync(connection, rows, CopyRoutingDirect, cancellationToken).ConfigureAwait(false);
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.UniqueViolation)
        {
            await transaction.RollbackAsync("fresh", cancellationToken).ConfigureAwait(false);
            return -1;
        }

        var inserted = rows.Count;

        var counts = new Dictionary<(long Bucket, short Layer, short Expert), long>();
        foreach (var row in rows)
        {
            var bucket = row.RecordedAt.UtcTicks - (row.RecordedAt.UtcTicks % TimeSpan.TicksPerMinute);
            foreach (var expert in row.Experts)
            {
                var key = (bucket, row.Layer, expert);
                counts[key] = counts.GetValueOrDefault(key) + 1;
            }
        }

        await using var upsert = new NpgsqlCommand(UpsertCounts, connection, transaction) { CommandTimeout = Seconds(commandTimeout) };
        upsert.Parameters.AddWithValue("edge", NpgsqlDbType.Varchar, edgeId);
        upsert.Parameters.AddWithValue("buckets", NpgsqlDbType.Array | NpgsqlDbType.TimestampTz, counts.Keys.Select(k => new DateTime(k.Bucket, DateTimeKind.Utc)).ToArray());
        upsert.Parameters.AddWithValue("layers", NpgsqlDbType.Array | NpgsqlDbType.Smallint, counts.Keys.Select(k => k.Layer).ToArray());
        upsert.Parameters.AddWithValue("experts", NpgsqlDbType.Array | NpgsqlDbType.Smallint, counts.Keys.Select(k => k.Expert).ToArray());
        upsert.Parameters.AddWithValue("counts", NpgsqlDbType.Array | NpgsqlDbType.Bigint, counts.Values.ToArray());
        await upsert.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        return inserted;
    }

    public async Task CloseAsync()
    {
        if (_connection is { } connection)
        {
            _connection = null;
            await connection.DisposeAsync().ConfigureAwait(false);
        }
    }

    public ValueTask DisposeAsync() => new(CloseAsync());

    private async Task CopyRoutingAsync(NpgsqlConnection connection, List<RoutingRow> rows, string copy, CancellationToken cancellationToken)
    {
        var importer = await connection.BeginBinaryImportAsync(copy, cancellationToken).ConfigureAwait(false);
        await using (importer.ConfigureAwait(false))
        {
            importer.Timeout = commandTimeout;
            foreach (var row in rows)
            {
                // Synchronous writes: the flusher owns this thread, and per-value async costs several times more.
                importer.StartRow();
                importer.Write(row.RequestId, NpgsqlDbType.Uuid);
                importer.Write(row.Position, NpgsqlDbType.Integer);
                importer.Write(row.Layer, NpgsqlDbType.Smallint);
                importer.Write(edgeId, NpgsqlDbType.Varchar);
                importer.Write(row.Experts, NpgsqlDbType.Array | NpgsqlDbType.Smallint);
                importer.Write(row.GateWeights, NpgsqlDbType.Array | NpgsqlDbType.Real);
                importer.Write(row.ServedBy, NpgsqlDbType.Array | NpgsqlDbType.Text);
                importer.Write(row.PlacementVersion, NpgsqlDbType.Integer);
                importer.Write(row.Remote, NpgsqlDbType.Boolean);
                importer.Write(row.RecordedAt, NpgsqlDbType.TimestampTz);
            }

            await importer.CompleteAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task CopyRequestsAsync(NpgsqlConnection connection, List<RequestRow> rows, CancellationToken cancellationToken)
    {
        var importer = await connection.BeginBinaryImportAsync(CopyRequests, cancellationToken).ConfigureAwait(false);
        await using (importer.ConfigureAwait(false))
        {
            importer.Timeout = commandTimeout;
            foreach (var row in rows)
            {
                importer.StartRow();
                importer.Write(row.RequestId, NpgsqlDbType.Uuid);
                importer.Write(edgeId, NpgsqlDbType.Varchar);
                WriteNullable(importer, row.WorkloadTag, NpgsqlDbType.Varchar);
                importer.Write(row.PromptTokens, NpgsqlDbType.Integer);
                WriteNullable(importer, row.Fingerprint is { } fingerprint ? RequestFingerprints.ToBytes(fingerprint) : null, NpgsqlDbType.Bytea);
                importer.Write(row.GeneratedTokens, NpgsqlDbType.Integer);
                importer.Write(row.Status, NpgsqlDbType.Varchar);
                WriteNullable(importer, row.Error, NpgsqlDbType.Text);
                WriteNullable(importer, row.PlacementVersion, NpgsqlDbType.Integer);
                importer.Write(row.ReceivedAt, NpgsqlDbType.TimestampTz);
                WriteNullable(importer, row.FirstTokenAt, NpgsqlDbType.TimestampTz);
                importer.Write(row.CompletedAt, NpgsqlDbType.TimestampTz);
                WriteNullable(importer, row.Communication?.RemoteBatches, NpgsqlDbType.Integer);
                WriteNullable(importer, row.Communication?.RemoteBatchShare, NpgsqlDbType.Double);
                WriteNullable(importer, row.Communication?.RemoteBytes, NpgsqlDbType.Bigint);
                WriteNullable(importer, row.Communication?.BatchRetries, NpgsqlDbType.Integer);
            }

            await importer.CompleteAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private static void WriteNullable<T>(NpgsqlBinaryImporter importer, T? value, NpgsqlDbType type)
    {
        if (value is null)
        {
            importer.WriteNull();
        }
        else
        {
            importer.Write(value, type);
        }
    }

    private async Task<long> ScalarAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, string sql, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(sql, connection, transaction) { CommandTimeout = Seconds(commandTimeout) };
        return (long)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    private static int Seconds(TimeSpan timeout) => Math.Max(1, (int)Math.Ceiling(timeout.TotalSeconds));
}
