using System.Diagnostics;
using System.Globalization;
using DanceMoE.Inference;
using DanceMoE.Model;
using DanceMoE.Model.Onnx;
using DanceMoE.Operations;
using Microsoft.ML.OnnxRuntime;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>
/// <c>dancemoe bench expert-exec</c>: one layer's experts run on a step's rows in several ways (output
/// buffers, intra-op threads, experts in parallel, one session for the whole layer), each timed against
/// today's per-expert path in the same process and checked bit for bit against it.
/// </summary>
public static class ExpertExecutionBenchmark
{
    /// <summary>The most memory the benchmark may take by <see cref="EstimatedBytes"/>.</summary>
    public const long MaxBytes = 8L << 30;

    /// <summary>
    /// A rough upper bound on the memory of a run: the prefill step's rows held about 20 times (inputs, the expected
    /// outputs and each variant's, 8 batches in flight) with the experts' activations, or the decode steps' KV caches after it.
    /// </summary>
    public static long EstimatedBytes(MoeConfig c, int sequences, int prefillTokens)
    {
        ArgumentNullException.ThrowIfNull(c);
        var tokens = (long)sequences * prefillTokens;
        var step = sizeof(float) * ((tokens * c.TopK * ((20L * c.HiddenSize) + (3L * c.IntermediateSize))) + (tokens * ((4L * c.HiddenSize) + c.NumExperts)));
        return Math.Max(step, KvCacheBenchmark.EstimatedBytes(c, sequences));
    }

    /// <summary>Runs the benchmark; the tables go to <paramref name="output"/>, the runtime's messages to <paramref name="log"/>.</summary>
    public static void Run(ExpertExecutionBenchmarkSettings settings, TextWriter output, TextWriter log, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(log);
        var manifest = BenchmarkModel.Load(settings.ModelDirectory);

        var c = manifest.Architecture;
        if (settings.Layer >= c.RoutedLayers)
        {
            throw new InvalidSettingsException($"the model has {c.RoutedLayers} layers");
        }

        var bytes = EstimatedBytes(c, settings.Sequences, settings.PrefillTokens);
        if (bytes > MaxBytes)
        {
            throw new InvalidSettingsException(string.Create(CultureInfo.InvariantCulture,
                $"--sequences {settings.Sequences} with --prefill-tokens {settings.PrefillTokens} would take about {bytes / (1 << 20):N0} MiB on this model; at most {MaxBytes >> 20:N0} MiB"));
        }

        try
        {
            using var variants = new Variants(manifest, settings, log);
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"layer {settings.Layer}: {c.NumExperts} experts, hidden {c.HiddenSize}, ffn {c.IntermediateSize}, top-{c.TopK}, {variants.Provider}, {Environment.ProcessorCount} cores, {settings.Iterations} iterations (median)"));
            var random = new SplitMix64(17);
            foreach (var (name, tokens) in new[] { ("decode", settings.Sequences), ("prefill", settings.Sequences * settings.PrefillTokens) })
            {
                cancellationToken.ThrowIfCancellationRequested();
                var step = Step.Route(tokens, c.NumExperts, c.TopK, c.HiddenSize, random);
                output.WriteLine();
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{name}: {tokens} tokens x top-{c.TopK} = {step.Rows.Sum()} rows over {step.Rows.Count(r => r > 0)} experts (at most {step.Rows.Max()} rows)"));
                output.WriteLine("variant                                        ms/step   vs today   same bits");
                var expected = step.NewOutputs();
                variants.Today(step, expected, 1);
                var all = variants.All.ToList();
                var outputs = all.Select(_ => step.NewOutputs()).ToList();
                var times = Interleaved(settings.Iterations, [.. all.Select((v, i) => (Action)(() => v.Run(step, outputs[i])))]);
                for (var i = 0; i < all.Count; i++)
                {
                    var same = expected.Zip(outputs[i]).All(p => p.First.AsSpan().SequenceEqual(p.Second));
                    output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"{all[i].Label,-44} {times[i],9:F3} {times[0] / times[i],9:F2}x   {(same ? "yes" : "NO")}"));
                }

                output.WriteLine("peer batches in flight (each the whole step, preallocated outputs, intra-op 1): throughput vs one at a time");
                int[] inFlight = [1, 2, 4, 8];
                var rounds = Interleaved(settings.Iterations, [.. inFlight.Select(n => (Action)(() => Parallel.For(0, n, new ParallelOptions { MaxDegreeOfParallelism = n }, _ =>
                    variants.Preallocated(step, step.NewOutputs(), 1, parallel: false))))]);
                for (var i = 0; i < inFlight.Length; i++)
                {
                    var perBatch = rounds[i] / inFlight[i];
                    output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"  {inFlight[i]} in flight: {rounds[i],8:F3} ms per round, {perBatch,8:F3} ms per batch, {rounds[0] / perBatch,5:F2}x throughput"));
                }

                variants.CompareMoeOperator(tokens, settings.Iterations, random, output);
            }
        }
        catch (Exception ex) when (OnnxRuntimeFailures.Translate(ex) is { } failure)
        {
            throw failure;
        }
    }

    /// <summary>
    /// The median milliseconds of each action, run in turns (one of each per round) so that a busy
    /// moment of the shared machine falls on every variant alike.
    /// </summary>
    private static double[] Interleaved(int iterations, Action[] actions)
    {
        for (var i = 0; i < Math.Min(5, iterations); i++)
        {
            foreach (var action in actions)
            {
                action();
            }
        }

        var times = actions.Select(_ => new double[iterations]).ToArray();
        for (var i = 0; i < iterations; i++)
        {
            for (var a = 0; a < actions.Length; a++)
            {
                var start = Stopwatch.GetTimestamp();
                actions[a]();
                times[a][i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            }
        }

        return [.. times.Select(t => t.Order().ElementAt(iterations / 2))];
    }

    /// <summary>A step's rows grouped by expert: each token picks top-k distinct experts at random.</summary>
    private sealed record Step(int[] Rows, float[][] Inputs, int Hidden)
    {
        public static Step Route(int tokens, int experts, int topK, int hidden, SplitMix64 random)
        {
            var rows = new int[experts];
            for (var t = 0; t < tokens; t++)
            {
                var chosen = new HashSet<int>();
                while (chosen.Count < topK)
                {
                    chosen.Add((int)(random.Next() % (ulong)experts));
                }

                foreach (var e in chosen)
                {
                    rows[e]++;
                }
            }

            var inputs = rows.Select(r => Enumerable.Range(0, r * hidden).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray()).ToArray();
            return new Step(rows, inputs, hidden);
        }

        public float[][] NewOutputs() => [.. Rows.Select(r => new float[r * Hidden])];

        public IEnumerable<int> Active => Enumerable.Range(0, Rows.Length).Where(e => Rows[e] > 0);
    }

    /// <summary>The sessions of every variant, created once; each variant runs a whole step into the outputs given.</summary>
    private sealed class Variants : IDisposable
    {
        private readonly ModelManifest _manifest;
        private readonly int _layer;
        private readonly int _hidden;
        private readonly Dictionary<int, ExpertSessionPool> _pools = [];
        private readonly Dictionary<int, InferenceSession[]> _sessions = [];
        private readonly Dictionary<int, OrtIoBinding[]> _bindings = [];
        private readonly ExpertLayerSession _layerSession;
        private readonly RunOptions _run = new();
        private readonly InferenceSession? _moeOperator;
        private readonly string? _moeOperatorMissing;

        public Variants(ModelManifest manifest, ExpertExecutionBenchmarkSettings settings, TextWriter log)
        {
            _manifest = manifest;
            _layer = settings.Layer;
            _hidden = manifest.Architecture.HiddenSize;
            foreach (var threads in new[] { 1, 2 })
            {
                var factory = new SessionFactory(settings.Inference with { IntraOpThreads = threads, InterOpThreads = 1 }, line => log.WriteLine($"dancemoe: {line}"));
                _pools[threads] = new ExpertSessionPool(manifest, factory);
                _sessions[threads] = [.. manifest.Layers[_layer].Experts.Select(e => factory.Create(manifest.PathOf(e.File)))];
                _bindings[threads] = [.. _sessions[threads].Select(s => s.CreateIoBinding())];
                Provider ??= factory.ProviderInUse;
                foreach (var e in manifest.Layers[_layer].Experts)
                {
                    _pools[threads].Load(e.Layer, e.Expert);
                }
            }

            var layerFactory = new SessionFactory(settings.Inference with { IntraOpThreads = 1, InterOpThreads = 1 });
            _layerSession = new ExpertLayerSession(manifest, _layer, [.. manifest.Layers[_layer].Experts.Select(e => e.Expert)], layerFactory);
            try
            {
                _moeOperator = layerFactory.Create(MoeOperatorGraph.Build(manifest, _layer));
            }
            catch (Exception ex) when (ex is ModelFormatException or OnnxRuntimeException)
            {
                _moeOperatorMissing = ex.Message.Split('\n', 2)[0];
            }
        }

        public string? Provider { get; }

        /// <summary>
        /// The step's tokens, each with top-k experts and weights, mixed as the runtime does (a batch per expert on its
        /// session with preallocated outputs, then Σ w·y in expert order) against ONNX Runtime's com.microsoft.MoE
        /// operator, which routes, runs and mixes in one kernel; router logits log(w) on the chosen experts make it pick
        /// the same experts with the same weights.
        /// </summary>
        public void CompareMoeOperator(int tokens, int iterations, SplitMix64 random, TextWriter output)
        {
            var c = _manifest.Architecture;
            if (_moeOperator is null)
            {
                output.WriteLine($"MoE operator (com.microsoft.MoE): not measured: {_moeOperatorMissing}");
                return;
            }

            var x = Enumerable.Range(0, tokens * _hidden).Select(_ => (float)((random.NextDouble() * 2) - 1)).ToArray();
            var logits = Enumerable.Repeat(GraphNames.MaskedOut, tokens * c.NumExperts).ToArray();
            var choices = new (int Expert, float Weight)[tokens][];
            for (var t = 0; t < tokens; t++)
            {
                var chosen = new SortedSet<int>();
                while (chosen.Count < c.TopK)
                {
                    chosen.Add((int)(random.Next() % (ulong)c.NumExperts));
                }

                var raw = chosen.Select(_ => 0.1 + random.NextDouble()).ToArray();
                choices[t] = [.. chosen.Zip(raw, (e, w) => (e, (float)(w / raw.Sum())))];
                foreach (var (e, w) in choices[t])
                {
                    logits[(t * c.NumExperts) + e] = MathF.Log(w);
                }
            }

            var rowsOf = Enumerable.Range(0, c.NumExperts).Select(e => Enumerable.Range(0, tokens).Where(t => choices[t].Any(ch => ch.Expert == e)).ToArray()).ToArray();
            var weightsOf = rowsOf.Select((rows, e) => rows.Select(t => choices[t].First(ch => ch.Expert == e).Weight).ToArray()).ToArray();
            var inputs = rowsOf.Select(rows => rows.SelectMany(t => x.AsSpan(t * _hidden, _hidden).ToArray()).ToArray()).ToArray();
            var outputs = rowsOf.Select(rows => new float[rows.Length * _hidden]).ToArray();
            var perExpert = new float[tokens * _hidden];
            var moe = new float[tokens * _hidden];
            var pool = _pools[1];
            void PerExpert()
            {
                Array.Clear(perExpert);
                for (var e = 0; e < c.NumExperts; e++)
                {
                    if (rowsOf[e].Length > 0)
                    {
                        pool.Run(_layer, e, inputs[e], rowsOf[e].Length, outputs[e]);
                    }
                }

                for (var e = 0; e < c.NumExperts; e++)
                {
                    for (var i = 0; i < rowsOf[e].Length; i++)
                    {
                        var t = rowsOf[e][i];
                        ExpertMix.AddWeighted(perExpert.AsSpan(t * _hidden, _hidden), weightsOf[e][i], outputs[e].AsSpan(i * _hidden, _hidden));
                    }
                }
            }

            void Operator()
            {
                using var input = OrtValue.CreateTensorValueFromMemory(x, [tokens, _hidden]);
                using var router = OrtValue.CreateTensorValueFromMemory(logits, [tokens, c.NumExperts]);
                using var result = OrtValue.CreateTensorValueFromMemory(moe, [tokens, _hidden]);
                _moeOperator.Run(_run, [MoeOperatorGraph.Input, MoeOperatorGraph.RouterProbs], [input, router], [MoeOperatorGraph.Output], [result]);
            }

            var times = Interleaved(iterations, [PerExpert, Operator]);
            var diff = perExpert.Zip(moe).Max(p => Math.Abs(p.First - p.Second));
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"MoE operator (com.microsoft.MoE, one Run routes, runs and mixes {tokens} tokens): {times[1]:F3} ms against {times[0]:F3} ms per expert + mix: {times[0] / times[1]:F2}x; max |diff| {diff:E2}, same bits {(perExpert.AsSpan().SequenceEqual(moe) ? "yes" : "no")}"));
        }

        public IEnumerable<(string Label, Action<Step, float[][]> Run)> All =>
        [
            ("today: per-expert Run, new outputs, intra 1", (s, o) => Today(s, o, 1)),
            ("today: per-expert Run, new outputs, intra 2", (s, o) => Today(s, o, 2)),
            ("preallocated outputs, intra 1", (s, o) => Preallocated(s, o, 1, parallel: false)),
            ("preallocated outputs, intra 2", (s, o) => Preallocated(s, o, 2, parallel: false)),
            ("IOBinding, intra 1", (s, o) => Bound(s, o, 1)),
            ("experts in parallel, preallocated, intra 1", (s, o) => Preallocated(s, o, 1, parallel: true)),
            ("experts in parallel, preallocated, intra 2", (s, o) => Preallocated(s, o, 2, parallel: true)),
            ("one layer session, one Run per step", (s, o) => _layerSession.Run([.. s.Active.Select(e => Rows(s, o, e))])),
            ("one layer session, one Run per expert", (s, o) => LayerPerExpert(s, o)),
        ];

        /// <summary>What ExpertSessionPool.Run did before outputs were preallocated: ORT allocates, then a copy.</summary>
        public void Today(Step step, float[][] outputs, int threads)
        {
            foreach (var e in step.Active)
            {
                using var x = OrtValue.CreateTensorValueFromMemory(step.Inputs[e], [step.Rows[e], _hidden]);
                using var y = _sessions[threads][e].Run(_run, [GraphNames.ExpertX], [x], [GraphNames.ExpertY]);
                outputs[e] = y[0].GetTensorDataAsSpan<float>().ToArray();
            }
        }

        public void Preallocated(Step step, float[][] outputs, int threads, bool parallel)
        {
            var pool = _pools[threads];
            if (parallel)
            {
                Parallel.ForEach(step.Active, e => pool.Run(_layer, e, step.Inputs[e], step.Rows[e], outputs[e]));
                return;
            }

            foreach (var e in step.Active)
            {
                pool.Run(_layer, e, step.Inputs[e], step.Rows[e], outputs[e]);
            }
        }

        public void Bound(Step step, float[][] outputs, int threads)
        {
            foreach (var e in step.Active)
            {
                long[] shape = [step.Rows[e], _hidden];
                using var x = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, step.Inputs[e].AsMemory(), shape);
                using var y = OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, outputs[e].AsMemory(), shape);
                var binding = _bindings[threads][e];
                binding.BindInput(GraphNames.ExpertX, x);
                binding.BindOutput(GraphNames.ExpertY, y);
                _sessions[threads][e].RunWithBinding(_run, binding);
            }
        }

        public void Dispose()
        {
            foreach (var binding in _bindings.Values.SelectMany(b => b))
            {
                binding.Dispose();
            }

            foreach (var session in _sessions.Values.SelectMany(s => s))
            {
                session.Dispose();
            }

            foreach (var pool in _pools.Values)
            {
                pool.Dispose();
            }

            _layerSession.Dispose();
            _moeOperator?.Dispose();
            _run.Dispose();
        }

        private static ExpertRows Rows(Step step, float[][] outputs, int expert) =>
            new(expert, step.Inputs[expert], step.Rows[expert], outputs[expert]);

        /// <summary>The layer session used as today's per-expert path: every other expert runs on zero rows.</summary>
        private void LayerPerExpert(Step step, float[][] outputs)
        {
            foreach (var e in step.Active)
            {
                _layerSession.Run([Rows(step, outputs, e)]);
            }
        }
    }
}

/// <summary>What <c>bench expert-exec</c> runs: one layer's experts on a decode step and a prefill step.</summary>
public sealed record ExpertExecutionBenchmarkSettings
{
    public required string ModelDirectory { get; init; }
    public int Layer { get; init; }
    public int Sequences { get; init; } = 16;
    public int PrefillTokens { get; init; } = 24;
    public int Iterations { get; init; } = 50;
    public InferenceOptions Inference { get; init; } = new();
}
