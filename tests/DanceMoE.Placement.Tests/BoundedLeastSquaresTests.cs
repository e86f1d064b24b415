namespace DanceMoE.Placement.Tests;

public class BoundedLeastSquaresTests
{
    // A prompt-like time: per message, per byte and per byte squared, over message sizes whose two byte terms are
    // strongly correlated; parameters of very different sizes, as bench replay's bus costs are.
    private static readonly double[] Sizes = [1e5, 4e5, 1e6, 2e6, 4e6, 8e6, 1.3e7, 1.6e7];

    private static double Time(double[] p, double bytes, int messages) => Math.Max(0.002 * messages, (messages * p[0]) + (bytes * p[1]) + (bytes * bytes * p[2]));

    [Fact]
    public void Recovers_correlated_costs_of_very_different_sizes()
    {
        double[] truth = [6e-3, 20e-9, 3e-15];
        var measured = Sizes.Select((b, i) => Time(truth, b, 1 + (i % 3))).ToArray();

        var fitted = BoundedLeastSquares.Minimise(p => [.. Sizes.Select((b, i) => Time(p, b, 1 + (i % 3)) - measured[i])], [15e-3, 80e-9, 0.5e-15], [1e-3, 1e-9, 1e-15]);

        Assert.Equal(truth[0], fitted[0], 1e-6);
        Assert.Equal(truth[1], fitted[1], 1e-10);
        Assert.Equal(truth[2], fitted[2], 1e-17);
    }

    [Fact]
    public void Keeps_every_parameter_at_least_zero()
    {
        // The least-squares optimum without a bound has a negative per-message cost; bounded, it is 0 and the others refit.
        var measured = Sizes.Select(b => (b * 30e-9) - 0.004).ToArray();

        var fitted = BoundedLeastSquares.Minimise(p => [.. Sizes.Select((b, i) => (p[0] + (b * p[1]) + (b * b * p[2])) - measured[i])], [1e-3, 1e-9, 1e-15], [1e-3, 1e-9, 1e-15]);

        Assert.All(fitted, v => Assert.True(v >= 0));
        Assert.Equal(0, fitted[0], 1e-12);
        var error = Sizes.Select((b, i) => Math.Pow(fitted[0] + (b * fitted[1]) + (b * b * fitted[2]) - measured[i], 2)).Sum();
        var unfitted = Sizes.Select((b, i) => Math.Pow(measured[i], 2)).Sum();
        Assert.True(error < 1e-3 * unfitted, $"error {error} of {unfitted}");
    }
}
