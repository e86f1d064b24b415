using System.CommandLine;
using System.CommandLine.Invocation;
using System.CommandLine.Parsing;
using System.Runtime.InteropServices;
using DanceMoE.Cli.Commands;

namespace DanceMoE.Cli;

/// <summary>Parses `dancemoe VERB ...` with System.CommandLine and runs the verb's action.</summary>
public static class CommandLine
{
    /// <summary>Every verb of the CLI, with its options, defaults and help.</summary>
    public static RootCommand Build() => new(
        "DanceMoE.Bus: Mixture-of-Experts models served across edge servers over RabbitMQ.\n"
        + "The ./dancemoe wrapper also handles:\n"
        + "  services up|down|status [--json]   local RabbitMQ and PostgreSQL\n"
        + "  test [dotnet test options]         services up, then the whole test suite")
    {
        BenchCommand.Create(),
        ClusterCommand.Create(),
        CoordinatorCommand.Create(),
        DbCommand.Create(),
        DemoCommand.Create(),
        EdgeCommand.Create(),
        GenerateCommand.Create(),
        InferCommand.Create(),
        ModelCommand.Create(),
        PlacementCommand.Create(),
        StatusCommand.Create(),
        TopCommand.Create(),
    };

    /// <summary>Runs the command line <paramref name="args"/>; returns its exit code (see <see cref="ExitCodes"/>).</summary>
    public static async Task<int> RunAsync(string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var root = Build();
        if (args.Length == 0)
        {
            await root.Parse(["--help"]).InvokeAsync().ConfigureAwait(false);
            return ExitCodes.Usage;
        }

        if (RawArguments.FirstNotUtf8(args.Length) is { } notUtf8)
        {
            Console.Error.WriteLine($"dancemoe: {notUtf8}");
            return ExitCodes.Usage;
        }

        // `@file` stays a plain word (a prompt may start with @), as it was before System.CommandLine.
        var parse = root.Parse(args is ["help"] ? ["--help"] : args, new ParserConfiguration { ResponseFileTokenReplacer = null });
        var path = Path(parse.CommandResult);
        var verb = string.Join(' ', ["dancemoe", .. path]);
        // System.CommandLine takes an unknown --option for a positional argument's value (model export --nope): no path
        // or checkpoint here starts with "--", so such a word is an unknown option.
        if (parse.CommandResult.Children.OfType<ArgumentResult>().SelectMany(a => a.Tokens).FirstOrDefault(t => t.Value.StartsWith("--", StringComparison.Ordinal)) is { } stray)
        {
            Console.Error.WriteLine($"{verb}: unknown option or argument '{stray.Value}' (see {verb} --help)");
            return ExitCodes.Usage;
        }

        if (parse.Action is ParseErrorAction)
        {
            // A bad value or a word nobody expects says more than what is missing besides: report it first.
            var error = parse.Errors.FirstOrDefault(e => e.SymbolResult is OptionResult { Tokens.Count: > 0 } or ArgumentResult)?.Message
                ?? (parse.UnmatchedTokens.Count > 0 ? $"unknown option or argument '{parse.UnmatchedTokens[0]}'" : parse.Errors[0].Message);
            Console.Error.WriteLine($"{verb}: {error} (see {verb} --help)");
            return ExitCodes.Usage;
        }

        // Ctrl-C, SIGTERM and SIGHUP (a timeout, a closed terminal) all cancel the command, which cleans up what it
        // started (processes, databases, virtual hosts) before it returns; a second signal ends the process at once.
        var topVerb = path.FirstOrDefault() ?? "dancemoe";
        using var cancellation = new CancellationTokenSource();
        void OnSignal(PosixSignalContext context)
        {
            // Left uncancelled, the runtime's default handling of the signal ends the process.
            context.Cancel = !cancellation.IsCancellationRequested;
            Console.Error.WriteLine(context.Cancel
                ? $"dancemoe {topVerb}: {context.Signal}: stopping (a second signal exits without cleaning up)..."
                : $"dancemoe {topVerb}: {context.Signal} again: exiting without cleaning up");
            cancellation.Cancel();
        }

        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        using var hup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, OnSignal);

        var invocation = new InvocationConfiguration { EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null };
        try
        {
            return await parse.InvokeAsync(invocation, cancellation.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is UsageException or InvalidSettingsException)
        {
            Console.Error.WriteLine($"{verb}: {ex.Message} (see {verb} --help)");
            return ExitCodes.Usage;
        }
        catch (CliException ex)
        {
            Console.Error.WriteLine($"dancemoe {topVerb}: error: {ex.Message}");
            return ex.ExitCode;
        }
        catch (OperationException ex)
        {
            Console.Error.WriteLine($"dancemoe {topVerb}: error: {ex.Message}");
            return ex.Failure switch { OperationFailure.Unavailable => ExitCodes.Unavailable, OperationFailure.InvalidSettings => ExitCodes.Usage, _ => ExitCodes.Failed };
        }
        catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
        {
            Console.Error.WriteLine($"dancemoe {topVerb}: cancelled");
            return ExitCodes.Cancelled;
        }
    }

    /// <summary>The verb and sub-verbs of a parse, root excluded: ["placement", "simulate"].</summary>
    private static List<string> Path(CommandResult result)
    {
        var names = new List<string>();
        for (var current = result; current.Parent is CommandResult parent; current = parent)
        {
            names.Insert(0, current.Command.Name);
        }

        return names;
    }
}
