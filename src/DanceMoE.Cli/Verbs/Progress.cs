using Spectre.Console;

namespace DanceMoE.Cli.Verbs;

/// <summary>
/// Long work that reports what it is doing: a live status line when standard error is a terminal, plain
/// <c>dancemoe: ...</c> lines when it is redirected (scripts and tests read those).
/// </summary>
public static class Progress
{
    /// <summary>Runs <paramref name="work"/>, giving it a callback for its progress lines.</summary>
    public static T Run<T>(string title, Func<Action<string>, T> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        if (Console.IsErrorRedirected)
        {
            return work(line => Console.Error.WriteLine($"dancemoe: {line}"));
        }

        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        return console.Status().Start(Markup.Escape(title), context => work(line =>
        {
            console.WriteLine(line);
            context.Status(Markup.Escape(line));
        }));
    }
}
