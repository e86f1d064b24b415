using System.Globalization;

namespace DanceMoE.Traces;

/// <summary>Checks a record against the options and the schema and copies it into an immutable row.</summary>
internal sealed class TraceRecordValidator(TraceWriterOptions options)
{
    private static readonly DateTimeOffset Earliest = new(2000, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private static readonly TimeSpan FutureSlack = TimeSpan.FromDays(1);

    public RoutingRow ToRow(RoutingRecord record, DateTimeOffset now)
    {
        if (record is null)
        {
            throw new InvalidTraceRecordException("routing record is null");
        }

        string Where() => string.Create(CultureInfo.InvariantCulture, $"routing record (request {record.RequestId}, position {record.Position}, layer {record.Layer})");

        if (record.RequestId == Guid.Empty)
        {
            throw new InvalidTraceRecordException($"{Where()}: request id is empty");
        }

        if (record.Position < 0 || record.Position >= options.MaxPosition)
        {
            throw new InvalidTraceRecordException($"{Where()}: position {record.Position} is outside 0..{options.MaxPosition - 1}");
        }

        if (record.Layer < 0 || record.Layer >= options.MaxLayers)
        {
            throw new InvalidTraceRecordException($"{Where()}: layer {record.Layer} is outside 0..{options.MaxLayers - 1}");
        }

        if (record.PlacementVersion < 0)
        {
            throw new InvalidTraceRecordException($"{Where()}: placement version {record.PlacementVersion} is negative");
        }

        if (record.Experts is null || record.GateWeights is null || record.ServedBy is null)
        {
            throw new InvalidTraceRecordException($"{Where()}: experts, gate weights and served-by are required");
        }

        var k = record.Experts.Count;
        if (k == 0 || k > options.MaxExpertsPerRecord)
        {
            throw new InvalidTraceRecordException($"{Where()}: {k} experts; a record holds 1..{options.MaxExpertsPerRecord}");
        }

        if (record.GateWeights.Count != k)
        {
            throw new InvalidTraceRecordException($"{Where()}: {k} experts but {record.GateWeights.Count} gate weights");
        }

        if (record.ServedBy.Count != k)
        {
            throw new InvalidTraceRecordException($"{Where()}: {k} experts but {record.ServedBy.Count} served-by entries");
        }

        var experts = new short[k];
        var weights = new float[k];
        var servedBy = new string[k];
        var remote = false;
        for (var i = 0; i < k; i++)
        {
            var expert = record.Experts[i];
            if (expert < 0 || expert >= options.MaxExpertsPerLayer)
            {
                throw new InvalidTraceRecordException($"{Where()}: expert {expert} is outside 0..{options.MaxExpertsPerLayer - 1}");
            }

            if (Array.IndexOf(experts, (short)expert, 0, i) >= 0)
            {
                throw new InvalidTraceRecordException($"{Where()}: expert {expert} appears twice");
            }

            var weight = record.GateWeights[i];
            if (!float.IsFinite(weight))
            {
                throw new InvalidTraceRecordException($"{Where()}: gate weight of expert {expert} is {weight}");
            }

            var edge = record.ServedBy[i];
            if (string.IsNullOrWhiteSpace(edge) || edge.Length > TraceLimits.MaxEdgeIdLength || edge.Contains('\0', StringComparison.Ordinal))
            {
                throw new InvalidTraceRecordException($"{Where()}: served-by of expert {expert} must be an edge id of 1..{TraceLimits.MaxEdgeIdLength} characters");
            }

            experts[i] = (short)expert;
            weights[i] = weight;
            servedBy[i] = edge;
            remote |= !string.Equals(edge, options.EdgeId, StringComparison.Ordinal);
        }

        if (record.Remote is { } declared && declared != remote)
        {
            throw new InvalidTraceRecordException(
                $"{Where()}: remote flag is {declared} but served-by [{string.Join(", ", servedBy)}] says {remote} for origin {options.EdgeId}");
        }

        return new RoutingRow
        {
            RequestId = record.RequestId,
            Position = record.Position,
            Layer = (short)record.Layer,
            Experts = experts,
            GateWeights = weights,
            ServedBy = servedBy,
            PlacementVersion = record.PlacementVersion,
            Remote = remote,
            RequestFingerprint = record.RequestFingerprint,
            RecordedAt = Timestamp(record.RecordedAt == default ? now : record.RecordedAt, now) ?? throw OutOfRange(Where(), "recorded-at", record.RecordedAt),
        };
    }

    public RequestRow ToRow(RequestSummary summary, DateTimeOffset now)
    {
        if (summary is null)
        {
            throw new InvalidTraceRecordException("request summary is null");
        }

        string Where() => $"request summary {summary.RequestId}";

        if (summary.RequestId == Guid.Empty)
        {
            throw new InvalidTraceRecordException($"{Where()}: request id is empty");
        }

        if (summary.PromptTokens < 0 || summary.PromptTokens > options.MaxPosition)
        {
            throw new InvalidTraceRecordException($"{Where()}: prompt tokens {summary.PromptTokens} is outside 0..{options.MaxPosition}");
        }

        if (summary.GeneratedTokens < 0 || summary.GeneratedTokens > options.MaxPosition)
        {
            throw new InvalidTraceRecordException($"{Where()}: generated tokens {summary.GeneratedTokens} is outside 0..{options.MaxPosition}");
        }

        if (TraceLimits.WorkloadTagProblem(summary.WorkloadTag) is { } tagProblem)
        {
            throw new InvalidTraceRecordException($"{Where()}: workload tag {tagProblem}");
        }

        if (summary.PlacementVersion is < 0)
        {
            throw new InvalidTraceRecordException($"{Where()}: placement version {summary.PlacementVersion} is negative");
        }

        if (!Enum.IsDefined(summary.Status))
        {
            throw new InvalidTraceRecordException($"{Where()}: status {(int)summary.Status} is not a {nameof(RequestStatus)}");
        }

        var received = Timestamp(summary.ReceivedAt, now) ?? throw OutOfRange(Where(), "received-at", summary.ReceivedAt);
        var completed = Timestamp(summary.CompletedAt, now) ?? throw OutOfRange(Where(), "completed-at", summary.CompletedAt);
        if (completed < received)
        {
            throw new InvalidTraceRecordException($"{Where()}: completed at {completed:O} before it was received at {received:O}");
        }

        DateTimeOffset? firstToken = summary.FirstTokenAt is { } first ? Timestamp(first, now) ?? throw OutOfRange(Where(), "first-token-at", first) : null;
        if (firstToken is { } f && (f < received || f > completed))
        {
            throw new InvalidTraceRecordException($"{Where()}: first token at {f:O} is outside {received:O}..{completed:O}");
        }

        if (summary.Communication is { } c && (c.RemoteBatches < 0 || c.RemoteBytes < 0 || c.BatchRetries < 0
            || !double.IsFinite(c.RemoteBatchShare) || c.RemoteBatchShare < 0 || c.RemoteBatchShare > c.RemoteBatches + 1e-6))
        {
            throw new InvalidTraceRecordException(
                $"{Where()}: communication {c} has a negative count or a batch share outside 0..{c.RemoteBatches} batches");
        }

        return new RequestRow
        {
            RequestId = summary.RequestId,
            WorkloadTag = summary.WorkloadTag,
            PromptTokens = summary.PromptTokens,
            Fingerprint = summary.Fingerprint,
            GeneratedTokens = summary.GeneratedTokens,
            Status = summary.Status.ToString().ToLowerInvariant(),
            Error = Truncate(summary.Error?.Replace("\0", "", StringComparison.Ordinal), TraceLimits.MaxErrorLength),
            PlacementVersion = summary.PlacementVersion,
            ReceivedAt = received,
            FirstTokenAt = firstToken,
            CompletedAt = completed,
            Communication = summary.Communication,
        };
    }

    /// <summary>UTC, truncated to the microsecond PostgreSQL keeps; null when out of range.</summary>
    private static DateTimeOffset? Timestamp(DateTimeOffset value, DateTimeOffset now)
    {
        if (value < Earliest || value > now + FutureSlack)
        {
            return null;
        }

        var ticks = value.UtcTicks;
        return new DateTimeOffset(ticks - (ticks % 10), TimeSpan.Zero);
    }

    private static string? Truncate(string? text, int length) => text is { Length: > 0 } && text.Length > length ? text[..length] : text;

    private static InvalidTraceRecordException OutOfRange(string where, string what, DateTimeOffset value) =>
        new($"{where}: {what} {value:O} is not between {Earliest:yyyy-MM-dd} and a day from now");
}
