using System.Diagnostics;
using System.Globalization;
using DanceMoE.Inference;
using DanceMoE.Model;
using DanceMoE.Model.Onnx;
using Microsoft.ML.OnnxRuntime;

namespace DanceMoE.Cli.Commands;

/// <summary><c>dancemoe bench expert</c>: latency and GFLOP/s of one expert next to a plain matrix product of the same size.</summary>
public sealed class BenchCommand : ICliCommand
{
    private static readonly int[] BatchSizes = [1, 8, 32];

    public string Verb => "bench";

    public string Usage =>
        $"bench expert --model DIR [--layer 0] [--expert 0] [--iterations 50] {InferenceArguments.Usage} | {Benchmarks.ClusterBenchmark.Usage} | {Benchmarks.TracesBenchmark.Usage} | {Benchmarks.ShiftBenchmark.Usage}";

    public async Task<int> RunAsync(Arguments args, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        var action = args.Positional0("action (expert, cluster, traces, shift)");
        return action switch
        {
            "expert" => Expert(args, cancellationToken),
            "cluster" => await Benchmarks.ClusterBenchmark.RunAsync(args, cancellationToken).ConfigureAwait(false),
            "traces" => await Benchmarks.TracesBenchmark.RunAsync(args, cancellationToken).ConfigureAwait(false),
            "shift" => await Benchmarks.ShiftBenchmark.RunAsync(args, cancellationToken).ConfigureAwait(false),
            _ => throw new UsageException($"unknown action '{action}' (expert, cluster, traces, shift)"),
        };
    }

    private static int Expert(Arguments args, CancellationToken cancellationToken)
    {
        var modelDir = args.Required("model");
        var layer = args.Int("layer", 0, 0);
        var expert = args.Int("expert", 0, 0);
        var iterations = args.Int("iterations", 50, 1, 100_000);
        var options = InferenceArguments.Read(args);
        args.EnsureAllUsed(1);
        var manifest = InferenceArguments.LoadManifest(modelDir);
        var c = manifest.Architecture;
        if (layer >= c.NumLayers || expert >= c.NumExperts)
        {
            throw new UsageException($"the model has {c.NumLayers} layers x {c.NumExperts} experts");
        }

        var factory = new SessionFactory(options, InferenceArguments.Log);
        var matmulPath = Path.Combine(Path.GetTempPath(), $"dancemoe-bench-{Guid.NewGuid():N}.onnx");
        try
        {
            OnnxExporter.WriteMatMul(matmulPath, c.HiddenSize, 3 * c.IntermediateSize, 1);
            using var pool = new ExpertSessionPool(manifest, factory);
            using var matmul = factory.Create(matmulPath);
            using var run = new RunOptions();
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"expert {layer}.{expert}: hidden {c.HiddenSize}, ffn {c.IntermediateSize}, {manifest.WeightDtype}, {factory.ProviderInUse}, {iterations} iterations (median)"));
            Console.WriteLine("rows   expert ms  expert GFLOP/s   matmul ms  matmul GFLOP/s");
            var random = new SplitMix64(3);
            foreach (var rows in BatchSizes)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var x = Enumerable.Range(0, rows * c.HiddenSize).Select(_ => (float)random.NextDouble() - 0.5f).ToArray();
                var expertMs = Median(iterations, () => pool.Run(layer, expert, x, rows));
                var matmulMs = Median(iterations, () =>
                {
                    using var input = OrtValue.CreateTensorValueFromMemory(x, [rows, c.HiddenSize]);
                    using var output = matmul.Run(run, [GraphNames.ExpertX], [input], [GraphNames.ExpertY]);
                });
                var flops = 2.0 * rows * c.HiddenSize * c.IntermediateSize * 3;
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{rows,4} {expertMs,11:F3} {flops / expertMs / 1e6,16:F2} {matmulMs,11:F3} {flops / matmulMs / 1e6,15:F2}"));
            }
        }
        catch (OnnxRuntimeException ex)
        {
            throw new CliException($"ONNX Runtime: {ex.Message.Split('\n', 2)[0]}", ExitCodes.Failed, ex);
        }
        catch (ExecutionProviderUnavailableException ex)
        {
            throw new CliException(ex.Message, ExitCodes.Unavailable, ex);
        }
        finally
        {
            File.Delete(matmulPath);
        }

        return ExitCodes.Ok;
    }

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
