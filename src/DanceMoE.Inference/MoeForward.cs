using DanceMoE.Model;
using DanceMoE.Model.Onnx;
using Microsoft.ML.OnnxRuntime;

namespace DanceMoE.Inference;

/// <summary>
/// The forward loop over the exported subgraphs: embedding, then per layer the dense part (projections and output for
/// every row of the step at once, attention for each sequence against its own cache) and the top-k experts of every
/// sequence's rows through <see cref="IExpertDispatcher"/> (one batch per expert per step), then the head.
/// </summary>
public sealed class MoeForward : IDisposable
{
    private static readonly string[] DenseInputs = [GraphNames.Hidden, GraphNames.PositionIds, GraphNames.AttentionMask, GraphNames.PastKey, GraphNames.PastValue];
    private static readonly string[] DenseOutputs = [GraphNames.Residual, GraphNames.ExpertInput, GraphNames.RouterLogits, GraphNames.NewKey, GraphNames.NewValue];
    private static readonly string[] AttentionInputs = [GraphNames.Query, GraphNames.Key, GraphNames.Value, GraphNames.AttentionMask, GraphNames.PastKey, GraphNames.PastValue];
    private static readonly string[] AttentionOutputs = [GraphNames.AttentionOutput, GraphNames.NewKey, GraphNames.NewValue];
    private readonly InferenceSession _embedding;

    // Per routed layer, the one dense graph run per sequence, and the same in three graphs where the export has them: a
    // step of several sequences runs their projections and output once (a step of one runs the one graph, one run
    // instead of three; both give the same bits). InferenceOptions.DenseGraphs may leave either set unloaded.
    private readonly InferenceSession?[] _dense;
    private readonly DenseSteps?[] _steps;
    private readonly InferenceSession _head;
    private readonly IExpertDispatcher _experts;
    private readonly RunOptions _run = new();
    private readonly KvCacheMemory _kv;
    private readonly OrtIoBinding?[] _bindings;
    private readonly OrtIoBinding?[] _stepBindings;

    public MoeForward(ModelManifest manifest, SessionFactory factory, IExpertDispatcher experts)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        ArgumentNullException.ThrowIfNull(factory);
        Manifest = manifest;
        _experts = experts ?? throw new ArgumentNullException(nameof(experts));
        _embedding = factory.Create(manifest.PathOf(manifest.Embedding.File));
        var wanted = factory.Options.DenseGraphs;
        var loaded = new List<ModelFile>();
        InferenceSession Load(ModelFile file)
        {
            var session = factory.Create(manifest.PathOf(file.File));
            loaded.Add(file);
            return session;
        }

        _steps = [.. manifest.Layers.Select(l => l.DenseSteps is { } files && wanted != DenseGraphs.OneGraph
            ? new DenseSteps(Load(files.Projections), Load(files.Attention), Load(files.Output))
            : null)];
        _dense = [.. manifest.Layers.Select((l, i) => _steps[i] is null || wanted == DenseGraphs.Both ? Load(l.Dense) : null)];
        DenseFiles = loaded;
        _head = factory.Create(manifest.PathOf(manifest.Head.File));
        var onCuda = factory.ProviderInUse == "cuda";
        var native = factory.Options.KvCache == KvCacheStorage.Native || (factory.Options.KvCache == KvCacheStorage.Auto && onCuda);
        _kv = !native ? KvCacheMemory.Managed() : onCuda ? KvCacheMemory.Cuda(_embedding, factory.Options.CudaDeviceId) : KvCacheMemory.Host();
        _bindings = _kv.Storage == KvCacheStorage.Native ? [.. _dense.Select(d => d?.CreateIoBinding())] : [];
        _stepBindings = _kv.Storage == KvCacheStorage.Native ? [.. _steps.Select(s => s?.Attention.CreateIoBinding())] : [];
    }

    public ModelManifest Manifest { get; }

    /// <summary>The dense graphs this forward loaded (see <see cref="DenseGraphs"/>); their weight bytes are what it holds of the dense part.</summary>
    public IReadOnlyList<ModelFile> DenseFiles { get; }

    /// <summary>Where this forward's caches live (never <see cref="KvCacheStorage.Auto"/>).</summary>
    public KvCacheStorage KvCache => _kv.Storage;

    /// <summary>KV cache buffers allocated and not yet freed (two per routed layer of each live <see cref="KvState"/>).</summary>
    public int KvBuffersInUse => _kv.Outstanding;

    /// <summary>A cache for a sequence of at most <paramref name="capacity"/> positions (default: the model's maximum).</summary>
    public KvState NewState(int? capacity = null)
    {
        var c = Manifest.Architecture;
        var positions = capacity ?? c.MaxPositions;
        if (positions < 1 || positions > c.MaxPositions)
        {
            throw new ArgumentOutOfRangeException(nameof(capacity), $"a cache of {positions} positions; the model allows 1 to {c.MaxPositions}");
        }

        return new KvState(_kv, [.. c.DecoderLayersOfRoutedLayers().Select(g => g.Length * c.CacheHeads)], c.KeyHeadDim, c.ValueHeadDim, positions);
    }

    /// <summary>
    /// Runs the tokens after those already in <paramref name="state"/> for the request of <paramref name="context"/>
    /// (its routing decisions are recorded there when it asks); returns logits [tokens, vocab].
    /// </summary>
    public async Task<float[]> ForwardAsync(IReadOnlyList<int> tokens, KvState state, ForwardContext context, CancellationToken cancellationToken)
    {
        var result = (await StepAsync([new SequenceChunk(tokens, state, context)], cancellationToken).ConfigureAwait(false))[0];
        return result.Logits ?? throw result.Error!;
    }

    /// <summary>
    /// One step for several sequences: each runs its chunk of tokens; per layer, the rows of all of them are grouped by
    /// expert and dispatched once. A sequence whose experts fail gets its error and leaves the step; the others go on.
    /// Invalid chunks throw before anything runs.
    /// </summary>
    public async Task<IReadOnlyList<ChunkResult>> StepAsync(IReadOnlyList<SequenceChunk> chunks, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(chunks);
        var c = Manifest.Architecture;
        var ids = new List<long>();
        foreach (var chunk in chunks)
        {
            Validate(chunk);
            ids.AddRange(chunk.Tokens.Select(t => (long)t));
        }

        var sequences = new Sequence[chunks.Count];
        using (var input = OrtValue.CreateTensorValueFromMemory(ids.ToArray(), [ids.Count]))
        using (var outputs = _embedding.Run(_run, [GraphNames.InputIds], [input], [GraphNames.Hidden]))
        {
            var all = outputs[0].GetTensorDataAsSpan<float>();
            var offset = 0;
            for (var i = 0; i < chunks.Count; i++)
            {
                var rows = chunks[i].Tokens.Count * c.HiddenSize;
                sequences[i] = new Sequence(chunks[i], all.Slice(offset, rows).ToArray(), c.NumExperts);
                offset += rows;
            }
        }

        RowBuffers? buffers = null;
        for (var l = 0; l < c.RoutedLayers; l++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var running = sequences.Where(s => s.Error is null).ToList();
            if (running.Count == 0)
            {
                break;
            }

            if (_steps[l] is { } steps && (running.Count > 1 || _dense[l] is null))
            {
                buffers ??= new RowBuffers(c, running.Sum(q => q.Rows));
                RunDenseSteps(l, steps, running, buffers);
            }
            else
            {
                foreach (var sequence in running)
                {
                    RunDense(l, sequence);
                }
            }

            await MixExpertsAsync(l, running, cancellationToken).ConfigureAwait(false);
        }

        var results = new ChunkResult[chunks.Count];
        var finished = new List<Sequence>(sequences.Length);
        for (var i = 0; i < chunks.Count; i++)
        {
            if (sequences[i].Error is { } error)
            {
                results[i] = new ChunkResult(null, error);
                continue;
            }

            sequences[i].Chunk.State.Length = sequences[i].Total;
            finished.Add(sequences[i]);
        }

        if (finished.Count > 0)
        {
            // One head run for every finished sequence's rows: each row's logits depend on that row alone.
            var rows = finished.Sum(s => s.Rows);
            var hidden = finished.Count == 1 ? finished[0].Hidden : new float[rows * c.HiddenSize];
            if (finished.Count > 1)
            {
                var at = 0;
                foreach (var sequence in finished)
                {
                    sequence.Hidden.CopyTo(hidden, at);
                    at += sequence.Hidden.Length;
                }
            }

            using var h = OrtValue.CreateTensorValueFromMemory(hidden, [rows, c.HiddenSize]);
            using var logits = _head.Run(_run, [GraphNames.Hidden], [h], [GraphNames.Logits]);
            var all = logits[0].GetTensorDataAsSpan<float>();
            var vocab = all.Length / rows;
            var offset = 0;
            for (var i = 0; i < chunks.Count; i++)
            {
                if (results[i] is null)
                {
                    results[i] = new ChunkResult(all.Slice(offset * vocab, sequences[i].Rows * vocab).ToArray(), null);
                    offset += sequences[i].Rows;
                }
            }
        }

        return results;
    }

    public void Dispose()
    {
        _embedding.Dispose();
        foreach (var d in _dense)
        {
            d?.Dispose();
        }

        foreach (var binding in _stepBindings)
        {
            binding?.Dispose();
        }

        foreach (var steps in _steps)
        {
            steps?.Dispose();
        }

        foreach (var binding in _bindings)
        {
            binding?.Dispose();
        }

        _head.Dispose();
        _run.Dispose();
        _kv.Dispose();
    }

    private void Validate(SequenceChunk chunk)
    {
        ArgumentNullException.ThrowIfNull(chunk);
        ArgumentNullException.ThrowIfNull(chunk.Tokens);
        ArgumentNullException.ThrowIfNull(chunk.State);
        ArgumentNullException.ThrowIfNull(chunk.Context);
        var c = Manifest.Architecture;
        if (chunk.Tokens.Count == 0)
        {
            throw new ArgumentException("no tokens to run", nameof(chunk));
        }

        if (chunk.State.Length + chunk.Tokens.Count > Math.Min(chunk.State.Capacity, c.MaxPositions))
        {
            throw new ArgumentException(
                $"sequence of {chunk.State.Length + chunk.Tokens.Count} exceeds its cache of {chunk.State.Capacity} positions (max_position_embeddings {c.MaxPositions})",
                nameof(chunk));
        }

        foreach (var token in chunk.Tokens)
        {
            if (token < 0 || token >= c.VocabSize)
            {
                throw new ArgumentOutOfRangeException(nameof(chunk), $"token id {token} outside vocabulary of {c.VocabSize}");
            }
        }
    }

    /// <summary>
    /// Attention of one sequence against its own cache; the graph writes this step's keys and values straight into the
    /// cache after its filled prefix, and the residual, expert input and router logits into the sequence's buffers.
    /// </summary>
    private void RunDense(int l, Sequence sequence)
    {
        var c = Manifest.Architecture;
        var state = sequence.Chunk.State;
        var s = sequence.Rows;
        var past = state.Length;
        using var h = OrtValue.CreateTensorValueFromMemory(sequence.Hidden, [s, c.HiddenSize]);
        using var pos = OrtValue.CreateTensorValueFromMemory(sequence.Positions, [s]);
        using var m = OrtValue.CreateTensorValueFromMemory(sequence.Mask, [s, sequence.Total]);
        using var pk = state.Keys(l, 0, past);
        using var pv = state.Values(l, 0, past);
        using var residual = OrtValue.CreateTensorValueFromMemory(sequence.Residual, [s, c.HiddenSize]);
        using var expertInput = OrtValue.CreateTensorValueFromMemory(sequence.ExpertInput, [s, c.HiddenSize]);
        using var router = OrtValue.CreateTensorValueFromMemory(sequence.RouterLogits, [s, c.NumExperts]);
        using var nk = state.Keys(l, past, s);
        using var nv = state.Values(l, past, s);
        OrtValue[] inputs = [h, pos, m, pk, pv];
        OrtValue[] outputs = [residual, expertInput, router, nk, nv];
        RunOnCache(_dense[l]!, _bindings.Length > 0 ? _bindings[l] : null, DenseInputs, inputs, DenseOutputs, outputs);

        // The next layer's attention reads this layer's past only: the cache's length moves once the step is done.
        (sequence.Hidden, sequence.Residual) = (sequence.Residual, sequence.Hidden);
    }

    /// <summary>
    /// Layer <paramref name="l"/>'s dense part for every sequence of a step: one projections run over all their rows, the
    /// attention of each against its own cache (writing this step's keys and values into it), one output run over all
    /// rows. Each row's projections and output depend on that row alone, so a sequence gets the same floats in any step.
    /// </summary>
    private void RunDenseSteps(int l, DenseSteps steps, IReadOnlyList<Sequence> sequences, RowBuffers b)
    {
        var c = Manifest.Architecture;
        // Sequences whose experts failed leave the step, so a later layer may have fewer rows than the buffers.
        var (h, n) = (c.HiddenSize, sequences.Sum(q => q.Rows));
        var at = 0;
        foreach (var sequence in sequences)
        {
            sequence.Hidden.CopyTo(b.Hidden, at * h);
            sequence.Positions.CopyTo(b.Positions, at);
            at += sequence.Rows;
        }

        using (var hidden = Rows(b.Hidden, 0, n, h))
        using (var positions = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, b.Positions.AsMemory(0, n), [n]))
        using (var query = Rows(b.Query, 0, n, c.NumHeads, c.KeyHeadDim))
        using (var key = Rows(b.Key, 0, n, c.CacheHeads, c.KeyHeadDim))
        using (var value = Rows(b.Value, 0, n, c.CacheHeads, c.ValueHeadDim))
        {
            steps.Projections.Run(_run, [GraphNames.Hidden, GraphNames.PositionIds], [hidden, positions], [GraphNames.Query, GraphNames.Key, GraphNames.Value], [query, key, value]);
        }

        at = 0;
        foreach (var sequence in sequences)
        {
            var state = sequence.Chunk.State;
            var (s, past) = (sequence.Rows, state.Length);
            using var query = Rows(b.Query, at, s, c.NumHeads, c.KeyHeadDim);
            using var key = Rows(b.Key, at, s, c.CacheHeads, c.KeyHeadDim);
            using var value = Rows(b.Value, at, s, c.CacheHeads, c.ValueHeadDim);
            using var mask = OrtValue.CreateTensorValueFromMemory(sequence.Mask, [s, sequence.Total]);
            using var pk = state.Keys(l, 0, past);
            using var pv = state.Values(l, 0, past);
            using var attention = Rows(b.Attention, at, s, c.NumHeads * c.ValueHeadDim);
            using var nk = state.Keys(l, past, s);
            using var nv = state.Values(l, past, s);
            RunOnCache(steps.Attention, _stepBindings.Length > 0 ? _stepBindings[l] : null, AttentionInputs, [query, key, value, mask, pk, pv], AttentionOutputs, [attention, nk, nv]);
            at += s;
        }

        using (var hidden = Rows(b.Hidden, 0, n, h))
        using (var attention = Rows(b.Attention, 0, n, c.NumHeads * c.ValueHeadDim))
        using (var residual = Rows(b.Residual, 0, n, h))
        using (var expertInput = Rows(b.ExpertInput, 0, n, h))
        using (var router = Rows(b.RouterLogits, 0, n, c.NumExperts))
        {
            steps.Output.Run(_run, [GraphNames.Hidden, GraphNames.AttentionOutput], [hidden, attention], [GraphNames.Residual, GraphNames.ExpertInput, GraphNames.RouterLogits], [residual, expertInput, router]);
        }

        at = 0;
        foreach (var sequence in sequences)
        {
            var rows = sequence.Rows;
            b.Residual.AsSpan(at * h, rows * h).CopyTo(sequence.Residual);
            b.ExpertInput.AsSpan(at * h, rows * h).CopyTo(sequence.ExpertInput);
            b.RouterLogits.AsSpan(at * c.NumExperts, rows * c.NumExperts).CopyTo(sequence.RouterLogits);
            (sequence.Hidden, sequence.Residual) = (sequence.Residual, sequence.Hidden);
            at += rows;
        }
    }

    /// <summary>Rows [<paramref name="from"/>, from + <paramref name="rows"/>) of a row-major buffer, in place.</summary>
    private static OrtValue Rows(float[] buffer, int from, int rows, params long[] shapeOfRow)
    {
        var width = 1;
        foreach (var d in shapeOfRow)
        {
            width *= (int)d;
        }

        return OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, buffer.AsMemory(from * width, rows * width), [rows, .. shapeOfRow]);
    }

    /// <summary>
    /// Runs a graph that reads and appends to a sequence's cache: on managed caches (no binding) a plain run, on native
    /// ones with every tensor bound where it lives (the cache's on the session's device, the small per-row
    /// ones on the host; ONNX Runtime copies those in and out).
    /// </summary>
    private void RunOnCache(InferenceSession session, OrtIoBinding? binding, string[] inputNames, OrtValue[] inputs, string[] outputNames, OrtValue[] outputs)
    {
        if (binding is null)
        {
            session.Run(_run, inputNames, inputs, outputNames, outputs);
            return;
        }

        // A binding serves one run at a time (steps of one forward may run concurrently). Every name is bound again
        // before each run: what a finished run leaves in it (addresses of pinned memory that may since have moved) is
        // never read.
        lock (binding)
        {
            for (var i = 0; i < inputs.Length; i++)
            {
                binding.BindInput(inputNames[i], inputs[i]);
            }

            for (var i = 0; i < outputs.Length; i++)
            {
                binding.BindOutput(outputNames[i], outputs[i]);
            }

            session.RunWithBinding(_run, binding);
            if (_kv.OnDevice)
            {
                binding.SynchronizeBoundOutputs();
            }
        }
    }

    /// <summary>
    /// Routes every row of every sequence to its top-k experts, one batch per expert for the whole step, and adds
    /// Σ wᵢ·yᵢ to each row's residual (in expert order, as a single sequence would).
    /// </summary>
    private async Task MixExpertsAsync(int l, IReadOnlyList<Sequence> sequences, CancellationToken cancellationToken)
    {
        var c = Manifest.Architecture;
        var hsz = c.HiddenSize;
        var rowsByExpert = new SortedDictionary<int, List<(Sequence Sequence, int Row, float Weight, int Token)>>();
        var decisions = new List<RoutingDecision>[sequences.Count];
        var firstToken = 0;
        for (var q = 0; q < sequences.Count; q++)
        {
            var sequence = sequences[q];
            decisions[q] = new List<RoutingDecision>(sequence.Rows);
            for (var t = 0; t < sequence.Rows; t++)
            {
                var position = sequence.Chunk.State.Length + t;
                var choices = sequence.Chunk.Context.Replay is { } replay
                    ? replay.At(l, position)
                    : Routing.Choose(c, sequence.RouterLogits.AsSpan(t * c.NumExperts, c.NumExperts));
                decisions[q].Add(new RoutingDecision(l, position, choices));
                foreach (var choice in choices)
                {
                    if (!rowsByExpert.TryGetValue(choice.Expert, out var rows))
                    {
                        rows = [];
                        rowsByExpert.Add(choice.Expert, rows);
                    }

                    rows.Add((sequence, t, choice.Weight, firstToken + t));
                }
            }

            firstToken += sequence.Rows;
        }

        var groups = rowsByExpert.Values.ToList();
        var batches = rowsByExpert.Select(kv =>
        {
            var input = new float[kv.Value.Count * hsz];
            for (var i = 0; i < kv.Value.Count; i++)
            {
                kv.Value[i].Sequence.ExpertInput.AsSpan(kv.Value[i].Row * hsz, hsz).CopyTo(input.AsSpan(i * hsz));
            }

            return new ExpertBatch(kv.Key, kv.Value.Count, input, [.. kv.Value.Select(r => r.Sequence.Chunk.Context)])
            {
                StepTokens = [.. kv.Value.Select(r => r.Token)],
                Weights = [.. kv.Value.Select(r => r.Weight)],
            };
        }).ToList();
        var result = await _experts.RunAsync(l, batches, cancellationToken).ConfigureAwait(false);
        foreach (var (b, error) in result.Failures)
        {
            foreach (var row in groups[b])
            {
                row.Sequence.Error ??= error;
            }
        }

        var batchOf = new Dictionary<int, int>(batches.Count);
        for (var b = 0; b < batches.Count; b++)
        {
            batchOf[batches[b].Expert] = b;
        }

        var completedAt = DateTimeOffset.UtcNow;
        for (var q = 0; q < sequences.Count; q++)
        {
            var context = sequences[q].Chunk.Context;
            if (sequences[q].Error is null && context.RecordsRouting)
            {
                var servedBy = new Dictionary<int, string>();
                foreach (var choice in decisions[q].SelectMany(d => d.Choices))
                {
                    servedBy.TryAdd(choice.Expert, result.ServedBy[batchOf[choice.Expert]]);
                }

                context.Record(new RoutedLayer(l, decisions[q], servedBy, result.PlacementVersion, completedAt));
            }
        }

        // Each token's Σ wᵢ·yᵢ from zero in expert order (batches are in expert order), or a peer's sum of the same, then
        // added to its residual: the same floats wherever the experts ran.
        foreach (var sequence in sequences)
        {
            Array.Clear(sequence.Mix);
        }

        for (var b = 0; b < batches.Count; b++)
        {
            if (result.Outputs[b] is not { } y)
            {
                continue;
            }

            for (var i = 0; i < groups[b].Count; i++)
            {
                var (sequence, row, weight, token) = groups[b][i];
                if (sequence.Error is null && !result.TokenSums.ContainsKey(token))
                {
                    ExpertMix.AddWeighted(sequence.Mix.AsSpan(row * hsz, hsz), weight, y.AsSpan(i * hsz, hsz));
                }
            }
        }

        firstToken = 0;
        foreach (var sequence in sequences)
        {
            if (sequence.Error is null)
            {
                for (var t = 0; t < sequence.Rows; t++)
                {
                    if (result.TokenSums.TryGetValue(firstToken + t, out var sum))
                    {
                        sum.CopyTo(sequence.Mix.AsSpan(t * hsz, hsz));
                    }
                }

                var hidden = sequence.Hidden;
                var mix = sequence.Mix;
                for (var j = 0; j < hidden.Length; j++)
                {
                    hidden[j] += mix[j];
                }
            }

            firstToken += sequence.Rows;
        }
    }

    private sealed class DenseSteps(InferenceSession projections, InferenceSession attention, InferenceSession output) : IDisposable
    {
        public InferenceSession Projections { get; } = projections;

        public InferenceSession Attention { get; } = attention;

        public InferenceSession Output { get; } = output;

        public void Dispose()
        {
            Projections.Dispose();
            Attention.Dispose();
            Output.Dispose();
        }
    }

    /// <summary>All rows of a step's sequences, allocated once per step and used by every layer's dense steps.</summary>
    private sealed class RowBuffers(MoeConfig c, int rows)
    {
        public float[] Hidden { get; } = new float[rows * c.HiddenSize];

        public long[] Positions { get; } = new long[rows];

        public float[] Query { get; } = new float[rows * c.NumHeads * c.KeyHeadDim];

        public float[] Key { get; } = new float[rows * c.CacheHeads * c.KeyHeadDim];

        public float[] Value { get; } = new float[rows * c.CacheHeads * c.ValueHeadDim];

        public float[] Attention { get; } = new float[rows * c.NumHeads * c.ValueHeadDim];

        public float[] Residual { get; } = new float[rows * c.HiddenSize];

        public float[] ExpertInput { get; } = new float[rows * c.HiddenSize];

        public float[] RouterLogits { get; } = new float[rows * c.NumExperts];
    }

    /// <summary>One sequence's buffers for a step; the dense graph writes into them, so nothing is allocated per layer.</summary>
    private sealed class Sequence
    {
        public Sequence(SequenceChunk chunk, float[] hidden, int experts)
        {
            Chunk = chunk;
            Rows = chunk.Tokens.Count;
            var past = chunk.State.Length;
            Total = past + Rows;
            Hidden = hidden;
            Residual = new float[hidden.Length];
            ExpertInput = new float[hidden.Length];
            Mix = new float[hidden.Length];
            RouterLogits = new float[Rows * experts];
            Positions = [.. Enumerable.Range(past, Rows).Select(p => (long)p)];
            Mask = new float[Rows * Total];
            for (var t = 0; t < Rows; t++)
            {
                for (var j = past + t + 1; j < Total; j++)
                {
                    Mask[(t * Total) + j] = GraphNames.MaskedOut;
                }
            }
        }

        public SequenceChunk Chunk { get; }

        public int Rows { get; }

        public int Total { get; }

        /// <summary>The rows going into the next layer (after a layer: its residual plus the experts' outputs).</summary>
        public float[] Hidden { get; set; }

        /// <summary>A spare buffer the dense graph writes its residual into; swapped with <see cref="Hidden"/> after each layer.</summary>
        public float[] Residual { get; set; }

        public float[] ExpertInput { get; }

        /// <summary>Each row's Σ wᵢ·yᵢ of the layer, added to <see cref="Hidden"/> once complete.</summary>
        public float[] Mix { get; }

        public float[] RouterLogits { get; }

        public long[] Positions { get; }

        public float[] Mask { get; }

        public Exception? Error { get; set; }
    }
}
