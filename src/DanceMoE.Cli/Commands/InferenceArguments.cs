using System.CommandLine;
using DanceMoE.Cli.Verbs;
using DanceMoE.Inference;
using DanceMoE.Model;

namespace DanceMoE.Cli.Commands;

/// <summary>Options shared by the commands that run exported models: add them to a command, read them from its parse.</summary>
internal sealed class InferenceArguments
{
    private readonly Option<string> _provider = CliOptions.Provider();
    // Every session (one per expert and per dense graph) gets a pool this large: more than the cores would only multiply threads.
    private readonly Option<int> _threads = CliOptions.Int("threads", 0, "intra-op threads of each session (0: one pool, one thread per core, shared by all sessions)", 0, Environment.ProcessorCount);
    private readonly Option<int> _interThreads = CliOptions.Int("inter-threads", 0, "inter-op threads of each session (0: ONNX Runtime's default)", 0, Environment.ProcessorCount);

    public InferenceArguments(Command command)
    {
        command.Options.Add(_provider);
        command.Options.Add(_threads);
        command.Options.Add(_interThreads);
    }

    public InferenceOptions Read(ParseResult result) => new()
    {
        Provider = InferenceOptions.ParseProvider(result.GetValue(_provider)),
        IntraOpThreads = result.GetValue(_threads),
        InterOpThreads = result.GetValue(_interThreads),
    };

    public static void Log(string line) => Console.Error.WriteLine($"dancemoe: {line}");

    /// <summary>The exported model for <paramref name="directory"/>: as it is, or a checkpoint's export (made once); null: the default model.</summary>
    public static string ResolveModel(string? directory) => ModelCatalog.ResolveExported(directory, Log);

    public static ModelManifest LoadManifest(string directory)
    {
        try
        {
            return ModelManifest.Load(directory);
        }
        catch (ModelFormatException ex)
        {
            throw new CliException(ex.Message, ExitCodes.Failed, ex);
        }
    }
}
