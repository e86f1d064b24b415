using System.Runtime.InteropServices;
using DanceMoE.Cli.Commands;

namespace DanceMoE.Cli;

/// <summary>Dispatches `dancemoe VERB ...` to the command that owns the verb.</summary>
public static class CommandLine
{
    private static readonly Dictionary<string, ICliCommand> Commands = new ICliCommand[]
    {
        new DbCommand(),
        new DemoCommand(),
        new PlacementCommand(),
        new ModelCommand(),
        new GenerateCommand(),
        new BenchCommand(),
        new EdgeCommand(),
        new InferCommand(),
        new ClusterCommand(),
        new CoordinatorCommand(),
        new StatusCommand(),
    }.ToDictionary(c => c.Verb, StringComparer.Ordinal);

    public static async Task<int> RunAsync(string[] args)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
        {
            PrintUsage(Console.Out);
            return args.Length == 0 ? ExitCodes.Usage : ExitCodes.Ok;
        }

        if (!Commands.TryGetValue(args[0], out var command))
        {
            Console.Error.WriteLine($"dancemoe: unknown verb '{args[0]}'");
            PrintUsage(Console.Error);
            return ExitCodes.Usage;
        }

        // Ctrl-C, SIGTERM and SIGHUP (a timeout, a closed terminal) all cancel the command, which cleans up what it
        // started (processes, databases, virtual hosts) before it returns.
        using var cancellation = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            cancellation.Cancel();
        };
        void OnSignal(PosixSignalContext context)
        {
            context.Cancel = true;
            Console.Error.WriteLine($"dancemoe {command.Verb}: {context.Signal}: stopping...");
            cancellation.Cancel();
        }

        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        using var hup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, OnSignal);

        try
        {
            return await command.RunAsync(new Arguments(args.Skip(1)), cancellation.Token).ConfigureAwait(false);
        }
        catch (UsageException ex)
        {
            Console.Error.WriteLine($"dancemoe {command.Verb}: {ex.Message}");
            Console.Error.WriteLine($"usage: {command.Usage}");
            return ExitCodes.Usage;
        }
        catch (CliException ex)
        {
            Console.Error.WriteLine($"dancemoe {command.Verb}: error: {ex.Message}");
            return ex.ExitCode;
        }
        catch (InvalidSettingsException ex)
        {
            Console.Error.WriteLine($"dancemoe {command.Verb}: {ex.Message}");
            Console.Error.WriteLine($"usage: {command.Usage}");
            return ExitCodes.Usage;
        }
        catch (OperationException ex)
        {
            Console.Error.WriteLine($"dancemoe {command.Verb}: error: {ex.Message}");
            return ex.Failure switch { OperationFailure.Unavailable => ExitCodes.Unavailable, OperationFailure.InvalidSettings => ExitCodes.Usage, _ => ExitCodes.Failed };
        }
        catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
        {
            Console.Error.WriteLine($"dancemoe {command.Verb}: cancelled");
            return ExitCodes.Cancelled;
        }
    }

    private static void PrintUsage(TextWriter writer)
    {
        writer.WriteLine("usage: dancemoe <verb> ...");
        writer.WriteLine("  services up|down|status [--json]   local RabbitMQ and PostgreSQL (handled by ./dancemoe itself)");
        writer.WriteLine("  test [dotnet test options]          services up, then the whole test suite");
        foreach (var command in Commands.Values.OrderBy(c => c.Verb, StringComparer.Ordinal))
        {
            writer.WriteLine($"  {command.Usage}");
        }
    }
}
