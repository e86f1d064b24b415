using System.Globalization;
using DanceMoE.Placement;
using ScottPlot;

namespace DanceMoE.Operations;

/// <summary>
/// A PNG bar chart of the simulation drawn with ScottPlot: mean request latency (with p99 as a tick) and the local
/// activation ratio per algorithm, side by side.
/// </summary>
public static class PlacementPlot
{
    private const int Width = 960;
    private const int Height = 560;
    private const int HeaderRows = 1;
    private const int PanelRows = 12;

    private static readonly Color[] Palette =
    [
        new(140, 140, 140), new(120, 160, 200), new(90, 130, 190), new(230, 150, 60), new(200, 90, 70), new(60, 160, 90),
    ];

    /// <summary>Writes the chart of <paramref name="results"/> to <paramref name="path"/> as a PNG.</summary>
    public static void Save(string path, string title, IReadOnlyList<AlgorithmResult> results)
    {
        // A header row for the title over the two panels: a panel's own title would be cut to half the width.
        var figure = new Multiplot();
        figure.AddPlots(3);
        var grid = new ScottPlot.MultiplotLayouts.CustomGrid();
        grid.Set(figure.GetPlot(0), new GridCell(0, 0, HeaderRows + PanelRows, 2, HeaderRows, 2));
        grid.Set(figure.GetPlot(1), new GridCell(HeaderRows, 0, HeaderRows + PanelRows, 2, PanelRows, 1));
        grid.Set(figure.GetPlot(2), new GridCell(HeaderRows, 1, HeaderRows + PanelRows, 2, PanelRows, 1));
        figure.Layout = grid;

        var header = figure.GetPlot(0);
        header.Title(title, 16);
        header.Axes.Bottom.Collapse();
        header.Axes.Left.Collapse();
        header.Axes.Right.Collapse();
        header.Axes.FrameWidth(0);
        header.HideGrid();

        var latency = figure.GetPlot(1);
        Bars(latency, "mean latency ms (tick: p99)", results, r => r.Metrics.LatencyMsMean, r => r.Metrics.LatencyMsMean.ToString("F0", CultureInfo.InvariantCulture));
        for (var i = 0; i < results.Count; i++)
        {
            var p99 = results[i].Metrics.LatencyMsP99;
            var tick = latency.Add.Line(i - 0.4, p99, i + 0.4, p99);
            tick.LineColor = Colors.Black;
            tick.LineWidth = 2;
        }

        latency.Axes.SetLimitsY(0, 1.1 * results.Max(r => Math.Max(r.Metrics.LatencyMsMean, r.Metrics.LatencyMsP99)));
        Bars(figure.GetPlot(2), "local activation ratio", results, r => r.Metrics.LocalRatio, r => r.Metrics.LocalRatio.ToString("F3", CultureInfo.InvariantCulture));
        figure.SavePng(path, Width, Height);
    }

    private static void Bars(Plot plot, string label, IReadOnlyList<AlgorithmResult> results, Func<AlgorithmResult, double> value, Func<AlgorithmResult, string> caption)
    {
        var bars = results.Select((r, i) => new Bar
        {
            Position = i,
            Value = value(r),
            FillColor = Palette[i % Palette.Length],
            Label = caption(r),
        }).ToList();
        plot.Add.Bars(bars);
        plot.Axes.Bottom.SetTicks([.. results.Select((_, i) => (double)i)], [.. results.Select(r => r.Algorithm)]);
        plot.YLabel(label);
        plot.Axes.Margins(bottom: 0);
    }
}
