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
        if (!File.Exists(path))
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
        var sessionOptions = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            IntraOpNumThreads = Options.IntraOpThreads,
            InterOpNumThreads = Options.InterOpThreads,
        };

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

    private static string FirstLine(string text) => text.Split('\n', 2)[0].Trim();
}
