using System.Diagnostics;
using DanceMoE.Inference;
using DanceMoE.Model.Onnx;
using Microsoft.ML.OnnxRuntime;

namespace DanceMoE.Model.Tests;

[CollectionDefinition(nameof(SessionThreadTests), DisableParallelization = true)]
public sealed class RunsAlone;

/// <summary>Counts the process's threads, so it runs alone, not beside tests that start sessions or threads.</summary>
[Collection(nameof(SessionThreadTests))]
public sealed class SessionThreadTests : IDisposable
{
    private const int Sessions = 24;
    private readonly TempDirectory _dir = new();
    private readonly string _expertFile;

    public SessionThreadTests()
    {
        TinyCheckpoint.Write(_dir.Sub("ckpt"), TinyModels.Small());
        var manifest = OnnxExporter.Export(Checkpoint.Open(_dir.Sub("ckpt")), _dir.Sub("onnx"), TensorDtype.F32);
        _expertFile = Path.Combine(_dir.Sub("onnx"), manifest.Layers[0].Experts[0].File);
    }

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Sessions_that_let_the_runtime_choose_threads_share_one_pool_instead_of_a_pool_each()
    {
        var ownPools = ThreadsAddedBy(new InferenceOptions { Provider = ExecutionProvider.Cpu, IntraOpThreads = 2 });
        var runtimeChooses = ThreadsAddedBy(new InferenceOptions { Provider = ExecutionProvider.Cpu });

        // Each pool of two threads runs on the caller and one thread of its own.
        Assert.True(ownPools >= Sessions, $"{Sessions} sessions with pools of their own added {ownPools} threads");
        Assert.True(runtimeChooses < Sessions / 4, $"{Sessions} sessions on the shared pool added {runtimeChooses} threads");
    }

    private int ThreadsAddedBy(InferenceOptions options)
    {
        var factory = new SessionFactory(options);
        var sessions = new List<InferenceSession> { factory.Create(_expertFile) };
        var before = ThreadCount();
        try
        {
            for (var i = 1; i <= Sessions; i++)
            {
                sessions.Add(factory.Create(_expertFile));
            }

            return ThreadCount() - before;
        }
        finally
        {
            sessions.ForEach(session => session.Dispose());
        }
    }

    private static int ThreadCount()
    {
        using var process = Process.GetCurrentProcess();
        return process.Threads.Count;
    }
}
