using DanceMoE.Model;
using Microsoft.ML.OnnxRuntime;

namespace DanceMoE.Inference;

/// <summary>
/// Creates ONNX Runtime sessions on the chosen execution provider. `auto` tries CUDA once and,
/// when its libraries are absent (AppendExecutionProvider_CUDA throws), logs one line and stays on CPU.
/// </summary>
public sealed class SessionFactory(InferenceOptions options, Action<string>? log = null)
{
    private readonly object _gate = new();
    private ExecutionProvider? _resolved;

    public InferenceOptions Options { get; } = options ?? throw new ArgumentNullException(nameof(options));

    /// <summary>The provider sessions actually use ("cuda" or "cpu"); null before the first session.</summary>
    public string? ProviderInUse => _resolved switch
    {
        ExecutionProvider.Cuda => "cuda",
        ExecutionProvider.Cpu => "cpu",
        _ => null,
    };

    public InferenceSession Create(string path)
    {
        if (!ModelFiles.RegularFileExists(path))
        {
            throw new FileNotFoundException($"{path}: model file not found", path);
        }

        using var sessionOptions = NewOptions();
        return new InferenceSession(path, sessionOptions);
    }

    /// <summary>A session over a model built in memory (an ONNX ModelProto's bytes).</summary>
    public InferenceSession Create(byte[] model)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var sessionOptions = NewOptions();
        return new InferenceSession(model, sessionOptions);
    }

    private SessionOptions NewOptions()
    {
        // Asked before any session exists in the process, whatever its threads, so the runtime's environment is ours.
        var poolShared = SharedThreadPool.Value;
        var useSharedPool = poolShared && Options is { IntraOpThreads: 0, InterOpThreads: 0 };
        var sessionOptions = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        if (useSharedPool)
        {
            sessionOptions.DisablePerSessionThreads();
        }
        else
        {
            sessionOptions.IntraOpNumThreads = Options.IntraOpThreads;
            sessionOptions.InterOpNumThreads = Options.InterOpThreads;
        }

        // Many small sessions (one per expert) share the cores: idle pool threads must not spin.
        sessionOptions.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
        sessionOptions.AddSessionConfigEntry("session.inter_op.allow_spinning", "0");
        lock (_gate)
        {
            var wanted = _resolved ?? Options.Provider;
            if (wanted == ExecutionProvider.Cpu)
            {
                _resolved = ExecutionProvider.Cpu;
                return sessionOptions;
            }

            // The native library logs its own error when CUDA is absent; our one line below says it instead.
            var env = OrtEnv.Instance();
            var logLevel = env.EnvLogLevel;
            env.EnvLogLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL;
            try
            {
                sessionOptions.AppendExecutionProvider_CUDA(Options.CudaDeviceId);
                _resolved = ExecutionProvider.Cuda;
            }
            catch (OnnxRuntimeException ex) when (wanted == ExecutionProvider.Auto)
            {
                _resolved = ExecutionProvider.Cpu;
                log?.Invoke($"CUDA execution provider unavailable ({FirstLine(ex.Message)}); using CPU");
            }
            catch (OnnxRuntimeException ex)
            {
                sessionOptions.Dispose();
                throw new ExecutionProviderUnavailableException($"CUDA execution provider unavailable: {FirstLine(ex.Message)}", ex);
            }
            finally
            {
                env.EnvLogLevel = logLevel;
            }
        }

        return sessionOptions;
    }

    /// <summary>
    /// One intra-op pool for the process, for sessions that let ONNX Runtime choose their threads: otherwise each
    /// session makes its own pool of one thread per core, and a model's hundreds of expert sessions make cores x
    /// sessions threads. False where the runtime's environment was created before this class could give it the pool.
    /// </summary>
    private static readonly Lazy<bool> SharedThreadPool = new(() =>
    {
        if (OrtEnv.IsCreated)
        {
            return false;
        }

        using var threading = new OrtThreadingOptions { GlobalIntraOpNumThreads = 0, GlobalInterOpNumThreads = 1, GlobalSpinControl = false };
        var environment = new EnvironmentCreationOptions { threadOptions = threading, logLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_WARNING };
        OrtEnv.CreateInstanceWithOptions(ref environment);
        return true;
    });

    private static string FirstLine(string text) => text.Split('\n', 2)[0].Trim();
}
