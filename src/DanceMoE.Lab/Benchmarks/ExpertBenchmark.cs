using System.Diagnostics;
using System.Globalization;
using DanceMoE.Inference;
using DanceMoE.Model;
using DanceMoE.Model.Onnx;
using DanceMoE.Operations;
using Microsoft.ML.OnnxRuntime;

namespace DanceMoE.Lab.Benchmarks;

/// <summary><c>dancemoe bench expert</c>: latency and GFLOP/s of one expert next to a plain matrix product of the same size.</summary>
public static class ExpertBenchmark
{
    private static readonly int[] BatchSizes = [1, 8, 32];

    /// <summary>Runs the benchmark; the table goes to <paramref name="output"/>, the runtime's messages to <paramref name="log"/>.</summary>
    public static void Run(ExpertBenchmarkSettings settings, TextWriter output, TextWriter log, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(log);
        var (layer, expert, iterations) = (settings.Layer, settings.Expert, settings.Iterations);
        var manifest = BenchmarkModel.Load(settings.ModelDirectory);

        var c = manifest.Architecture;
        if (layer >= c.RoutedLayers || expert >= c.NumExperts)
        {
            throw new InvalidSettingsException($"the model has {c.RoutedLayers} layers x {c.NumExperts} experts");
        }

        var factory = new SessionFactory(settings.Inference, line => log.WriteLine($"dancemoe: {line}"));
        var matmulPath = Path.Combine(Path.GetTempPath(), $"dancemoe-bench-{Guid.NewGuid():N}.onnx");
        try
        {
            OnnxExporter.WriteMatMul(matmulPath, c.HiddenSize, 3 * c.IntermediateSize, 1);
            using var pool = new ExpertSessionPool(manifest, factory);
            using var matmul = factory.Create(matmulPath);
            using var run = new RunOptions();
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"expert {layer}.{expert}: hidden {c.HiddenSize}, ffn {c.IntermediateSize}, {manifest.WeightDtype}, {factory.ProviderInUse}, {iterations} iterations (median)"));
            output.WriteLine("rows   expert ms  expert GFLOP/s   matmul ms  matmul GFLOP/s");
            var random = new SplitMix64(3);
            foreach (var rows in BatchSizes)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var x = Enumerable.Range(0, rows * c.HiddenSize).Select(_ => (float)random.NextDouble() - 0.5f).ToArray();
                var expertMs = Median(iterations, () => pool.Run(layer, expert, x, rows));
                var matmulMs = Median(iterations, () =>
                {
                    using var input = OrtValue.CreateTensorValueFromMemory(x, [rows, c.HiddenSize]);
                    using var result = matmul.Run(run, [GraphNames.ExpertX], [input], [GraphNames.ExpertY]);
                });
                var flops = 2.0 * rows * c.HiddenSize * c.IntermediateSize * 3;
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{rows,4} {expertMs,11:F3} {flops / expertMs / 1e6,16:F2} {matmulMs,11:F3} {flops / matmulMs / 1e6,15:F2}"));
            }
        }
        catch (Exception ex) when (OnnxRuntimeFailures.Translate(ex) is { } failure)
        {
            throw failure;
        }
        finally
        {
            File.Delete(matmulPath);
        }
    }

    /// <summary>The median of <paramref name="iterations"/> timed runs after a few untimed ones, in milliseconds.</summary>
    private static double Median(int iterations, Action action)
    {
        for (var i = 0; i < Math.Min(5, iterations); i++)
        {
            action();
        }

        var times = new double[iterations];
        for (var i = 0; i < iterations; i++)
        {
            var start = Stopwatch.GetTimestamp();
            action();
            times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }

        Array.Sort(times);
        return times[iterations / 2];
    }
}

/// <summary>What <c>bench expert</c> runs.</summary>
public sealed record ExpertBenchmarkSettings
{
    public required string ModelDirectory { get; init; }
    public int Layer { get; init; }
    public int Expert { get; init; }
    public int Iterations { get; init; } = 50;
    public InferenceOptions Inference { get; init; } = new();
}
