namespace DanceMoE.Placement;

/// <summary>
/// Non-negative parameters that minimise a sum of squared residuals: Levenberg-Marquardt on a Jacobian taken by finite
/// differences, each step clamped at zero. For a few correlated parameters (a bus's cost per message, per byte and per
/// byte squared all grow a prompt's time) where one parameter at a time crawls along the valley and stops short.
/// </summary>
public static class BoundedLeastSquares
{
    /// <summary>
    /// The parameters from <paramref name="start"/> that minimise the sum of squares of <paramref name="residuals"/>, each
    /// at least 0. <paramref name="scale"/> is each parameter's natural unit: the finite differences step a hundredth of
    /// it, and the steps are solved in those units so that parameters of very different sizes are conditioned alike.
    /// </summary>
    public static double[] Minimise(Func<double[], double[]> residuals, double[] start, double[] scale, int iterations = 30)
    {
        ArgumentNullException.ThrowIfNull(residuals);
        ArgumentNullException.ThrowIfNull(start);
        ArgumentNullException.ThrowIfNull(scale);
        var n = start.Length;
        var x = start.Select(v => Math.Max(0, v)).ToArray();
        var r = residuals(x);
        var error = SumOfSquares(r);
        var damping = 1e-3;
        for (var iteration = 0; iteration < iterations && damping < 1e12; iteration++)
        {
            // Jacobian in scaled units: d residual / d (x_j / scale_j).
            var jacobian = new double[n][];
            for (var j = 0; j < n; j++)
            {
                var h = scale[j] / 100;
                var forward = (double[])x.Clone();
                forward[j] += h;
                var rf = residuals(forward);
                jacobian[j] = [.. rf.Select((v, i) => (v - r[i]) / h * scale[j])];
            }

            var normal = new double[n, n];
            var gradient = new double[n];
            for (var a = 0; a < n; a++)
            {
                gradient[a] = jacobian[a].Select((v, i) => v * r[i]).Sum();
                for (var b = 0; b < n; b++)
                {
                    normal[a, b] = jacobian[a].Select((v, i) => v * jacobian[b][i]).Sum();
                }
            }

            var improved = false;
            while (!improved && damping < 1e12)
            {
                var system = (double[,])normal.Clone();
                for (var a = 0; a < n; a++)
                {
                    system[a, a] += damping * Math.Max(normal[a, a], 1e-12);
                }

                var step = Solve(system, [.. gradient.Select(g => -g)]);
                var trial = x.Select((v, j) => Math.Max(0, v + (step[j] * scale[j]))).ToArray();
                var trialResiduals = residuals(trial);
                var trialError = SumOfSquares(trialResiduals);
                if (trialError < error)
                {
                    var converged = error - trialError < 1e-9 * error;
                    (x, r, error, improved) = (trial, trialResiduals, trialError, true);
                    damping = Math.Max(damping / 10, 1e-9);
                    if (converged)
                    {
                        return x;
                    }
                }
                else
                {
                    damping *= 10;
                }
            }
        }

        return x;
    }

    private static double SumOfSquares(double[] r) => r.Sum(v => v * v);

    /// <summary>Gaussian elimination with partial pivoting; a singular direction gets no step.</summary>
    private static double[] Solve(double[,] a, double[] b)
    {
        var n = b.Length;
        for (var col = 0; col < n; col++)
        {
            var pivot = col;
            for (var row = col + 1; row < n; row++)
            {
                if (Math.Abs(a[row, col]) > Math.Abs(a[pivot, col]))
                {
                    pivot = row;
                }
            }

            for (var k = 0; k < n; k++)
            {
                (a[col, k], a[pivot, k]) = (a[pivot, k], a[col, k]);
            }

            (b[col], b[pivot]) = (b[pivot], b[col]);
            if (Math.Abs(a[col, col]) < 1e-300)
            {
                continue;
            }

            for (var row = col + 1; row < n; row++)
            {
                var factor = a[row, col] / a[col, col];
                for (var k = col; k < n; k++)
                {
                    a[row, k] -= factor * a[col, k];
                }

                b[row] -= factor * b[col];
            }
        }

        var x = new double[n];
        for (var row = n - 1; row >= 0; row--)
        {
            if (Math.Abs(a[row, row]) < 1e-300)
            {
                continue;
            }

            var sum = b[row];
            for (var k = row + 1; k < n; k++)
            {
                sum -= a[row, k] * x[k];
            }

            x[row] = sum / a[row, row];
        }

        return x;
    }
}
