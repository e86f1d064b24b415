using System.CommandLine;
using DanceMoE.Cli.Verbs;
using Spectre.Console;

namespace DanceMoE.Cli.Commands;

/// <summary>
/// <c>dancemoe top [--once]</c>: the local cluster's edges from their <c>/metrics</c> and <c>/readyz</c>, and the running
/// migration from PostgreSQL; a live table on a terminal, one plain frame with <c>--once</c> or when the output is redirected.
/// </summary>
public static class TopCommand
{
    public static Command Create()
    {
        var once = CliOptions.Flag("once", "print one frame as plain text (two scrapes --interval-ms apart, for the token rate) and exit");
        var interval = CliOptions.Int("interval-ms", 1000, "time between refreshes", 100, 60_000);
        var command = new Command("top", "a live view of the local cluster: per edge state, active requests, tokens/s, local share, request p99, peer round trips, placement; the running migration")
        {
            once, interval,
        };
        command.SetAction((result, cancellationToken) => RunAsync(result.GetValue(once), TimeSpan.FromMilliseconds(result.GetValue(interval)), cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(bool once, TimeSpan interval, CancellationToken cancellationToken)
    {
        var edges = LocalCluster.EdgesWithPorts();
        if (edges.Count == 0)
        {
            Console.Error.WriteLine("dancemoe: no local cluster is running (start one with ./dancemoe cluster up)");
            return ExitCodes.Failed;
        }

        using var top = ClusterTop.CreateLocal();
        if (once || Console.IsOutputRedirected)
        {
            await top.NextFrameAsync(edges, cancellationToken).ConfigureAwait(false);
            await Task.Delay(interval, cancellationToken).ConfigureAwait(false);
            var frame = await top.NextFrameAsync(edges, cancellationToken).ConfigureAwait(false);
            Console.WriteLine(frame.ToText());
            return ExitCodes.Ok;
        }

        var table = new Table();
        await AnsiConsole.Live(table).AutoClear(false).StartAsync(async context =>
        {
            try
            {
                while (true)
                {
                    var frame = await top.NextFrameAsync(LocalCluster.EdgesWithPorts(), cancellationToken).ConfigureAwait(false);
                    Fill(table, frame);
                    context.Refresh();
                    await Task.Delay(interval, cancellationToken).ConfigureAwait(false);
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                // Ctrl-C ends the view; the last frame stays on screen.
            }
        }).ConfigureAwait(false);
        return ExitCodes.Ok;
    }

    private static void Fill(Table table, TopFrame frame)
    {
        table.Rows.Clear();
        if (table.Columns.Count == 0)
        {
            foreach (var column in TopFrame.Columns)
            {
                table.AddColumn(Markup.Escape(column));
            }
        }

        foreach (var row in frame.Rows())
        {
            table.AddRow(row.Select(cell => new Markup(Markup.Escape(cell), cell == "down" ? new Style(Color.Red) : Style.Plain)).ToArray());
        }

        table.Title = new TableTitle(Markup.Escape($"dancemoe top {frame.At:HH:mm:ss}: {frame.Edges.Count} edges"));
        table.Caption = new TableTitle(Markup.Escape(frame.Migration));
    }
}
