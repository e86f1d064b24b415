using System.CommandLine;

namespace DanceMoE.Cli.Verbs;

/// <summary>
/// Runs a verb whose body still reads an <see cref="Arguments"/> after System.CommandLine has checked its grammar.
/// </summary>
public static class LegacyBridge
{
    // Transitional: edge, coordinator, demo, bench, cluster and placement run-now are being rewritten elsewhere; once
    // they read a ParseResult, this bridge, Arguments and ICliCommand go.

    /// <summary>Sets <paramref name="command"/>'s action to <paramref name="run"/> with <paramref name="words"/> then the options the user gave.</summary>
    public static Command Bridge(this Command command, Func<Arguments, CancellationToken, Task<int>> run, params string[] words)
    {
        ArgumentNullException.ThrowIfNull(command);
        ArgumentNullException.ThrowIfNull(run);
        command.SetAction((result, cancellationToken) => run(new Arguments([.. words, .. Given(result, command)]), cancellationToken));
        return command;
    }

    /// <summary>Sets <paramref name="command"/>'s action to <paramref name="verb"/>'s, with <paramref name="words"/> (its sub-verb) first.</summary>
    public static Command Bridge(this Command command, ICliCommand verb, params string[] words)
    {
        ArgumentNullException.ThrowIfNull(verb);
        return command.Bridge(verb.RunAsync, words);
    }

    /// <summary>The options given on the command line, as <c>--name=value</c> (a value may start with dashes) or <c>--flag</c>.</summary>
    private static IEnumerable<string> Given(ParseResult result, Command command)
    {
        foreach (var option in command.Options)
        {
            if (result.GetResult(option) is not { Implicit: false } given)
            {
                continue;
            }

            if (option.Arity.MaximumNumberOfValues == 0)
            {
                yield return option.Name;
            }
            else
            {
                foreach (var token in given.Tokens)
                {
                    yield return $"{option.Name}={token.Value}";
                }
            }
        }
    }
}
