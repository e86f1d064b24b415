using DanceMoE.Contracts;
using DanceMoE.Inference;
using DanceMoE.Model;
using DanceMoE.Traces;
using Microsoft.Extensions.Options;

namespace DanceMoE.Edge;

/// <summary>What one edge server holds while it runs: its experts, its routing table, its forward loop.</summary>
public sealed class EdgeRuntime(
    IOptions<EdgeOptions> options,
    EdgeModel model,
    ExpertStore experts,
    IRoutingTable routing,
    MoeForward forward,
    LinkEmulator link,
    ITraceWriter traces,
    StepScheduler scheduler)
{
    public EdgeOptions Options { get; } = options.Value;

    public ExpertStore Experts { get; } = experts;

    public IRoutingTable Routing { get; } = routing;

    public MoeForward Forward { get; } = forward;

    public ByteTokenizer Tokenizer { get; } = model.Tokenizer;

    public LinkEmulator Link { get; } = link;

    /// <summary>Where this edge's routing decisions and request summaries go (PostgreSQL, or nowhere with tracing off).</summary>
    public ITraceWriter Traces { get; } = traces;

    /// <summary>The provider the sessions run on, once the first one is created.</summary>
    public string ExecutionProvider => model.Sessions.ProviderInUse ?? "cpu";

    private (string Provider, string Described)? _computeClass;

    /// <summary>What the edge computes on, as its heartbeats tell the coordinator: the operator's words, else what the machine says.</summary>
    public string ComputeClass
    {
        get
        {
            if (Options.ComputeClass is { Length: > 0 } given)
            {
                return given;
            }

            var provider = ExecutionProvider;
            if (_computeClass is not { } known || known.Provider != provider)
            {
                known = (provider, ComputeClassProbe.Describe(provider, Environment.ProcessorCount));
                _computeClass = known;
            }

            return known.Described;
        }
    }

    /// <summary>Peers' expert batches being served now, from receipt to answer: the queue depth each answer reports.</summary>
    public InFlightCounter ExpertBatches { get; } = new();

    /// <summary>Experts a migration is loading onto this edge now (its LoadExpert commands in progress).</summary>
    public InFlightCounter ExpertLoads { get; } = new();

    /// <summary>This edge's own requests, batched step by step.</summary>
    public StepScheduler Scheduler { get; } = scheduler;

    /// <summary>The request ids this edge served lately and what each asked, so that an id reused for another request is refused.</summary>
    public RequestIdClaims RequestIds { get; } = new(options.Value.Id);

    /// <summary>The recorded requests this edge may replay (<c>--replay-trace</c>); null: it refuses replay requests.</summary>
    public ReplayTrace? Replay { get; } = options.Value.ReplayTrace is { Length: > 0 } path ? ReplayTrace.Load(path, model.Manifest.Architecture.NumExperts) : null;

    /// <summary>The recorded routing of replay request <paramref name="id"/>, checked to cover <paramref name="positions"/> positions of this model.</summary>
    public ReplayRouting ReplayRoutingOf(int id, int positions)
    {
        if (Replay is null)
        {
            throw new InvalidRequestException($"{Options.Id} was not started with a replay trace: replay request {id} refused");
        }

        var routing = Replay.Routing(id) ?? throw new InvalidRequestException($"replay request {id} is not in {Options.ReplayTrace}");
        var architecture = Experts.Manifest.Architecture;
        if (routing.Layers != architecture.NumLayers || routing.TopK != architecture.TopK)
        {
            throw new InvalidRequestException($"replay request {id} has {routing.Layers} layers of top-{routing.TopK}; the model has {architecture.NumLayers} of top-{architecture.TopK}");
        }

        if (positions > routing.Positions)
        {
            throw new InvalidRequestException($"replay request {id} records {routing.Positions} positions; prompt plus max new tokens need {positions}");
        }

        return routing;
    }

    /// <summary>
    /// Writes the routing decisions of a request's completed layers with the edge that served each expert, one
    /// <c>routing_events</c> row per (position, layer), stamped when its layer completed.
    /// </summary>
    public void WriteRouting(ForwardContext request, UInt128 fingerprint)
    {
        ArgumentNullException.ThrowIfNull(request);
        foreach (var layer in request.RoutedLayers)
        {
            foreach (var decision in layer.Decisions)
            {
                Traces.Add(new RoutingRecord
                {
                    RequestId = request.RequestId,
                    Position = decision.Position,
                    Layer = decision.Layer,
                    Experts = [.. decision.Choices.Select(c => c.Expert)],
                    GateWeights = [.. decision.Choices.Select(c => c.Weight)],
                    ServedBy = [.. decision.Choices.Select(c => layer.ServedBy[c.Expert])],
                    PlacementVersion = layer.PlacementVersion,
                    RecordedAt = layer.CompletedAt,
                    RequestFingerprint = fingerprint,
                });
            }
        }
    }

    /// <summary>Checks a request at the edge of the system and returns its prompt's token ids.</summary>
    public IReadOnlyList<int> ValidateRequest(GenerateText request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var architecture = Experts.Manifest.Architecture;
        if (request.Prompt is not null && request.PromptTokenIds is not null)
        {
            throw new InvalidRequestException("give either a prompt or prompt token ids, not both");
        }

        IReadOnlyList<int> ids;
        if (request.PromptTokenIds is { } given)
        {
            if (given.Count > Options.MaxPromptTokens)
            {
                throw new InvalidRequestException($"the prompt has {given.Count} tokens; this edge accepts at most {Options.MaxPromptTokens}");
            }

            var bad = given.Where(t => t < 0 || t >= architecture.VocabSize).Select(t => (int?)t).FirstOrDefault();
            if (bad is not null)
            {
                throw new InvalidRequestException($"prompt token id {bad} is outside the vocabulary of {architecture.VocabSize}");
            }

            ids = given;
        }
        else
        {
            if (string.IsNullOrEmpty(request.Prompt))
            {
                throw new InvalidRequestException("the prompt is empty");
            }

            if (request.Prompt.Length > Options.MaxPromptTokens * 4)
            {
                throw new InvalidRequestException($"the prompt has {request.Prompt.Length} characters; this edge accepts at most {Options.MaxPromptTokens} tokens");
            }

            ids = Tokenizer.Encode(request.Prompt);
        }

        if (ids.Count == 0)
        {
            throw new InvalidRequestException("the prompt is empty");
        }

        if (ids.Count > Options.MaxPromptTokens)
        {
            throw new InvalidRequestException($"the prompt has {ids.Count} tokens; this edge accepts at most {Options.MaxPromptTokens}");
        }

        if (request.MaxNewTokens < 1)
        {
            throw new InvalidRequestException($"max new tokens must be between 1 and {Options.MaxNewTokens} (got {request.MaxNewTokens})");
        }

        if (request.MaxNewTokens > Options.MaxNewTokens)
        {
            throw new InvalidRequestException($"{Options.Id} generates at most {Options.MaxNewTokens} tokens per request; asked {request.MaxNewTokens}");
        }

        if (ids.Count + request.MaxNewTokens > architecture.MaxPositions)
        {
            throw new InvalidRequestException(
                $"prompt ({ids.Count} tokens) plus max new tokens ({request.MaxNewTokens}) exceeds the model's context of {architecture.MaxPositions}");
        }

        if (double.IsNaN(request.Temperature) || request.Temperature < 0 || request.Temperature > 100)
        {
            throw new InvalidRequestException($"temperature must be between 0 and 100 (got {request.Temperature})");
        }

        if (double.IsNaN(request.TopP) || request.TopP <= 0 || request.TopP > 1)
        {
            throw new InvalidRequestException($"top-p must be in (0, 1] (got {request.TopP})");
        }

        // Checked here, not only when the trace is written: a tag the history cannot keep would fail the request after its work.
        if (TraceLimits.WorkloadTagProblem(request.WorkloadTag) is { } tagProblem)
        {
            throw new InvalidRequestException($"the workload tag {tagProblem}");
        }

        return ids;
    }

    /// <summary>Checks a peer's expert batch before any of it runs.</summary>
    public void ValidateBatch(RunExpertBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        var manifest = Experts.Manifest;
        var hidden = manifest.Architecture.HiddenSize;
        if (batch.Hidden is null || batch.Hidden.Length > Options.MaxBatchBytes)
        {
            throw new InvalidExpertBatchException($"batch payload of {batch.Hidden?.Length ?? 0} bytes exceeds this edge's limit of {Options.MaxBatchBytes} bytes");
        }

        if (batch.Layer < 0 || batch.Layer >= manifest.Layers.Count)
        {
            throw new InvalidExpertBatchException($"layer {batch.Layer} is outside the model's {manifest.Layers.Count} layers");
        }

        if (batch.HiddenSize != hidden)
        {
            throw new InvalidExpertBatchException($"batch hidden size {batch.HiddenSize} does not match the model's {hidden}");
        }

        if (batch.Slices is null || batch.Slices.Count == 0)
        {
            throw new InvalidExpertBatchException("batch has no expert slices");
        }

        var rowBytes = (long)hidden * sizeof(float);
        if (batch.Hidden.Length % rowBytes != 0)
        {
            throw new InvalidExpertBatchException($"batch payload has {batch.Hidden.Length} bytes, not a whole number of {hidden} float32 rows");
        }

        var tokens = batch.Hidden.Length / rowBytes;
        var indexed = batch.Slices.Count(s => s.TokenRows is { Count: > 0 });
        if (indexed != 0 && indexed != batch.Slices.Count)
        {
            throw new InvalidExpertBatchException($"{indexed} of the batch's {batch.Slices.Count} slices list their token rows: all or none must");
        }

        long rows = 0;
        foreach (var slice in batch.Slices)
        {
            if (slice.Expert < 0 || slice.Expert >= manifest.Architecture.NumExperts)
            {
                throw new InvalidExpertBatchException($"expert {slice.Expert} is outside layer {batch.Layer}'s {manifest.Architecture.NumExperts} experts");
            }

            if (slice.Rows <= 0)
            {
                throw new InvalidExpertBatchException($"expert {batch.Layer}.{slice.Expert} has {slice.Rows} rows");
            }

            if (indexed > 0)
            {
                ValidateTokenRows(batch.Layer, slice, tokens);
            }

            if (!Experts.Holds(batch.Layer, slice.Expert))
            {
                throw new InvalidExpertBatchException($"{Options.Id} does not hold expert {batch.Layer}.{slice.Expert}");
            }

            rows += slice.Rows;
        }

        ValidateSumRows(batch, indexed > 0, tokens);
        if (indexed == 0 && rows * rowBytes != batch.Hidden.Length)
        {
            throw new InvalidExpertBatchException(
                $"batch payload has {batch.Hidden.Length} bytes; {rows} rows x {hidden} float32 need {rows * rowBytes}");
        }

        if (indexed > 0 && tokens > rows)
        {
            throw new InvalidExpertBatchException($"batch payload has {tokens} token rows but its slices use only {rows} rows");
        }

        if (rows * rowBytes > Options.MaxBatchBytes)
        {
            throw new InvalidExpertBatchException($"batch result of {rows} rows ({rows * rowBytes} bytes) exceeds this edge's limit of {Options.MaxBatchBytes} bytes");
        }
    }

    private static void ValidateSumRows(RunExpertBatch batch, bool indexed, long tokens)
    {
        if (batch.SumRows is null)
        {
            throw new InvalidExpertBatchException("batch's sum rows are null: leave them out or list token rows");
        }

        if (batch.SumRows.Count == 0)
        {
            return;
        }

        if (!indexed)
        {
            throw new InvalidExpertBatchException("a batch with sum rows must list every slice's token rows");
        }

        var previous = -1;
        foreach (var row in batch.SumRows)
        {
            if (row < 0 || row >= tokens)
            {
                throw new InvalidExpertBatchException($"sum row {row} is outside the payload's {tokens} token rows");
            }

            if (row <= previous)
            {
                throw new InvalidExpertBatchException($"sum rows must ascend without repeats: {row} follows {previous}");
            }

            previous = row;
        }

        var listed = new HashSet<int>();
        var expert = -1;
        foreach (var slice in batch.Slices)
        {
            if (slice.Expert <= expert)
            {
                throw new InvalidExpertBatchException($"a batch with sum rows lists its experts in ascending order: {slice.Expert} follows {expert}");
            }

            expert = slice.Expert;
            if (slice.Weights is null || slice.Weights.Count != slice.Rows)
            {
                throw new InvalidExpertBatchException($"expert {batch.Layer}.{slice.Expert} has {slice.Rows} rows but {slice.Weights?.Count ?? 0} weights");
            }

            foreach (var weight in slice.Weights)
            {
                if (!float.IsFinite(weight))
                {
                    throw new InvalidExpertBatchException($"expert {batch.Layer}.{slice.Expert} has weight {weight}, not a finite number");
                }
            }

            listed.UnionWith(slice.TokenRows);
        }

        foreach (var row in batch.SumRows)
        {
            if (!listed.Contains(row))
            {
                throw new InvalidExpertBatchException($"sum row {row} is in none of the batch's slices");
            }
        }
    }

    private static void ValidateTokenRows(int layer, ExpertSlice slice, long tokens)
    {
        if (slice.TokenRows.Count != slice.Rows)
        {
            throw new InvalidExpertBatchException($"expert {layer}.{slice.Expert} has {slice.Rows} rows but lists {slice.TokenRows.Count} token rows");
        }

        foreach (var row in slice.TokenRows)
        {
            if (row < 0 || row >= tokens)
            {
                throw new InvalidExpertBatchException($"expert {layer}.{slice.Expert} lists token row {row}; the payload has {tokens}");
            }
        }
    }
}

/// <summary>Messages being processed by this edge now: the queue depth its heartbeats report.</summary>
public sealed class InFlightCounter
{
    private int _count;

    public int Count => Volatile.Read(ref _count);

    public void Enter() => Interlocked.Increment(ref _count);

    public void Leave() => Interlocked.Decrement(ref _count);
}
