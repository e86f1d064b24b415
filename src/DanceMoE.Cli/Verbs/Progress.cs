using System.Text;
using Spectre.Console;

namespace DanceMoE.Cli.Verbs;

/// <summary>
/// Long work that reports what it is doing: a live status line when standard error is a terminal, plain
/// lines when it is redirected (scripts and tests read those).
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

        var console = ErrorConsole();
        return console.Status().Start(Markup.Escape(title), context => work(line =>
        {
            console.WriteLine(line);
            context.Status(Markup.Escape(line));
        }));
    }

    /// <summary>Runs <paramref name="work"/> with a writer for its progress lines (standard error as is when redirected).</summary>
    public static async Task<T> RunAsync<T>(string title, Func<TextWriter, Task<T>> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        if (Console.IsErrorRedirected)
        {
            return await work(Console.Error).ConfigureAwait(false);
        }

        var console = ErrorConsole();
        return await console.Status().StartAsync(Markup.Escape(title), async context =>
        {
            using var writer = new StatusWriter(context);
            return await work(writer).ConfigureAwait(false);
        }).ConfigureAwait(false);
    }

    private static IAnsiConsole ErrorConsole() => AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });

    /// <summary>
    /// Each line becomes the status line's text. Lines are not also written above it: the work writes from several
    /// threads, and the live display redraws over such writes.
    /// </summary>
    private sealed class StatusWriter(StatusContext context) : TextWriter
    {
        private readonly StringBuilder _line = new();

        public override Encoding Encoding => Encoding.UTF8;

        public override void Write(char value)
        {
            lock (_line)
            {
                if (value != '\n')
                {
                    _line.Append(value);
                    return;
                }

                var line = _line.ToString().TrimEnd('\r');
                _line.Clear();
                context.Status(Markup.Escape(line));
            }
        }
    }
}
