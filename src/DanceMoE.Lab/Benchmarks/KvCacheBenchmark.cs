using System.Diagnostics;
using System.Globalization;
using DanceMoE.Inference;
using DanceMoE.Model;
using DanceMoE.Operations;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>
/// Decode steps of several sequences with their KV caches in managed arrays (today's CPU path) against native buffers
/// viewed by pointer and bound with IOBinding (the CUDA path), at a few cache lengths, in turns in the same process;
/// every step's logits are compared bit for bit.
/// </summary>
public static class KvCacheBenchmark
{
    private const int Warmup = 3;

    /// <summary>Prints the table to <paramref name="output"/>; false when the two paths' logits differ anywhere.</summary>
    public static async Task<bool> RunAsync(KvCacheBenchmarkSettings settings, TextWriter output, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(output);
        var manifest = BenchmarkModel.Load(settings.ModelDirectory);

        var c = manifest.Architecture;
        if (EstimatedBytes(c, settings.Sequences) is var bytes && bytes > ExpertExecutionBenchmark.MaxBytes)
        {
            throw new InvalidSettingsException(string.Create(CultureInfo.InvariantCulture,
                $"--sequences {settings.Sequences} would take about {bytes / (1 << 20):N0} MiB of KV caches and prefill on this model; at most {ExpertExecutionBenchmark.MaxBytes >> 20:N0} MiB"));
        }

        var steps = Warmup + settings.Iterations;
        int[] lengths = [.. new[] { 16, 64, c.MaxPositions / 2, c.MaxPositions - steps }.Where(l => l >= 1 && l + steps <= c.MaxPositions).Distinct()];
        if (lengths.Length == 0)
        {
            throw new InvalidSettingsException($"{settings.Iterations} decode steps do not fit the model's {c.MaxPositions} positions");
        }

        // As an edge that batches: the dense steps only, a step of one sequence included, on the edge's one intra-op
        // thread (ONNX Runtime's default, a thread per core, hands every small run to a second thread and is slower here).
        var asEdge = settings.Inference with { DenseGraphs = DenseGraphs.Steps, IntraOpThreads = 1, InterOpThreads = 1 };
        using var managed = new Engine(manifest, asEdge with { KvCache = KvCacheStorage.Managed });
        using var native = new Engine(manifest, asEdge with { KvCache = KvCacheStorage.Native });
        var allSame = await CompareAsync(
            settings, lengths, (managed, "managed"), (native, "native"), $"{native.Provider}, {settings.Iterations} steps per length (median), managed arrays vs native buffers bound with IOBinding", output, cancellationToken).ConfigureAwait(false);
        if (manifest.Layers.Any(l => l.DenseSteps is not null))
        {
            using var perSequence = new Engine(manifest, asEdge with { KvCache = KvCacheStorage.Managed, DenseGraphs = DenseGraphs.OneGraph });
            allSame &= await CompareAsync(
                settings, lengths, (perSequence, "one graph"), (managed, "steps"),
                $"{managed.Provider}, managed arrays, {settings.Iterations} steps per length (median), one dense graph per sequence vs dense steps (projections and output once per step, attention per sequence)", output, cancellationToken).ConfigureAwait(false);
        }

        return allSame;
    }

    /// <summary>
    /// A rough upper bound on the memory of a run: on each of the two engines compared, every sequence's cache of the
    /// model's whole context, and its prefill's activations, logits and attention scores (positions squared per head:
    /// 128 sequences of a tiny model of 1,024 positions took more than 23 GB).
    /// </summary>
    public static long EstimatedBytes(MoeConfig c, int sequences)
    {
        ArgumentNullException.ThrowIfNull(c);
        var cache = (long)c.NumLayers * c.CacheHeads * (c.KeyHeadDim + c.ValueHeadDim);
        var prefill = (long)c.VocabSize + (8L * c.HiddenSize) + (3L * c.TopK * c.IntermediateSize) + (2L * c.NumLayers * c.NumHeads * c.MaxPositions);
        return 2L * sequences * c.MaxPositions * (cache + prefill) * sizeof(float);
    }

    /// <summary>The same decode steps on two engines in turns; prints their medians and whether every step's logits agree bit for bit.</summary>
    private static async Task<bool> CompareAsync(
        KvCacheBenchmarkSettings settings, int[] lengths, (Engine Engine, string Name) first, (Engine Engine, string Name) second, string what, TextWriter output, CancellationToken cancellationToken)
    {
        var engines = new[] { first.Engine, second.Engine };
        var c = first.Engine.Forward.Manifest.Architecture;
        var steps = Warmup + settings.Iterations;
        output.WriteLine();
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"KV cache: decode steps of {settings.Sequences} sequences, {c.RoutedLayers} layers, {what}"));
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"cache length  {first.Name + " ms/step",16} {second.Name + " ms/step",16} {second.Name + " vs " + first.Name,18}   same bits"));
        var allSame = true;
        foreach (var length in lengths)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var states = engines.Select(e => Enumerable.Range(0, settings.Sequences).Select(_ => e.Forward.NewState(length + steps)).ToList()).ToList();
            try
            {
                var same = true;
                var times = new[] { new double[settings.Iterations], new double[settings.Iterations] };
                for (var step = -1; step < steps; step++)
                {
                    // Step -1 prefills every cache to the length; the engines take turns going first.
                    var chunks = states.Select(list => list.Select((state, s) => new SequenceChunk(
                        step < 0 ? [.. Enumerable.Range(0, length).Select(t => Token(s, t, c.VocabSize))] : [Token(s, length + step, c.VocabSize)], state, new ForwardContext())).ToList()).ToList();
                    var results = new IReadOnlyList<ChunkResult>[2];
                    foreach (var e in step % 2 == 0 ? new[] { 0, 1 } : [1, 0])
                    {
                        var start = Stopwatch.GetTimestamp();
                        results[e] = await engines[e].Forward.StepAsync(chunks[e], cancellationToken).ConfigureAwait(false);
                        if (step >= Warmup)
                        {
                            times[e][step - Warmup] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                        }
                    }

                    same &= results[0].Zip(results[1]).All(p => p.First.Logits is { } a && p.Second.Logits is { } b && a.AsSpan().SequenceEqual(b));
                }

                var (firstMs, secondMs) = (Median(times[0]), Median(times[1]));
                allSame &= same;
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{length,5}..{length + steps,-5}  {firstMs,16:F3} {secondMs,16:F3} {firstMs / secondMs,18:F2}x   {(same ? "yes" : "NO")}"));
            }
            finally
            {
                states.SelectMany(list => list).ToList().ForEach(s => s.Dispose());
            }
        }

        return allSame;
    }

    private static int Token(int sequence, int position, int vocabulary) => ((sequence * 31) + (position * 7) + 1) % vocabulary;

    private static double Median(double[] values) => values.Order().ElementAt(values.Length / 2);

    private sealed class Engine : IDisposable
    {
        private readonly ExpertSessionPool _pool;

        public Engine(ModelManifest manifest, InferenceOptions options)
        {
            var factory = new SessionFactory(options);
            _pool = new ExpertSessionPool(manifest, factory);
            Forward = new MoeForward(manifest, factory, new LocalExpertDispatcher(_pool));
            Provider = factory.ProviderInUse;
        }

        public MoeForward Forward { get; }

        public string? Provider { get; }

        public void Dispose()
        {
            Forward.Dispose();
            _pool.Dispose();
        }
    }
}

public sealed record KvCacheBenchmarkSettings
{
    public required string ModelDirectory { get; init; }
    public int Sequences { get; init; } = 16;
    public int Iterations { get; init; } = 30;
    public InferenceOptions Inference { get; init; } = new();
}
