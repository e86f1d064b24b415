using DanceMoE.Inference;
using DanceMoE.Model;

namespace DanceMoE.Cli.Commands;

/// <summary>Options shared by the commands that run exported models.</summary>
internal static class InferenceArguments
{
    public const string Usage = "[--provider auto|cuda|cpu] [--threads N] [--inter-threads N]";

    public static InferenceOptions Read(Arguments args)
    {
        ExecutionProvider provider;
        try
        {
            provider = InferenceOptions.ParseProvider(args.Option("provider"));
        }
        catch (ArgumentException ex)
        {
            throw new UsageException(ex.Message.Split(" (Parameter", 2)[0]);
        }

        return new InferenceOptions
        {
            Provider = provider,
            IntraOpThreads = args.Int("threads", 0, 0, 1024),
            InterOpThreads = args.Int("inter-threads", 0, 0, 1024),
        };
    }

    public static void Log(string line) => Console.Error.WriteLine($"dancemoe: {line}");

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
