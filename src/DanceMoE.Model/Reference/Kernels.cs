using System.Numerics;

namespace DanceMoE.Model.Reference;

/// <summary>Plain float32 building blocks of the reference forward.</summary>
public static class Kernels
{
    private const long ParallelWork = 1L << 22;

    /// <summary>y[n, out] = x[n, in] · W[out, in]ᵀ (the layout of checkpoint projections).</summary>
    public static float[] Linear(ReadOnlySpan<float> x, int rows, ReadOnlySpan<float> w, int outputs, int inputs)
    {
        var y = new float[rows * outputs];
        for (var r = 0; r < rows; r++)
        {
            var xr = x.Slice(r * inputs, inputs);
            for (var o = 0; o < outputs; o++)
            {
                y[(r * outputs) + o] = Dot(xr, w.Slice(o * inputs, inputs));
            }
        }

        return y;
    }

    /// <summary>As the span overload; large products run their outputs in parallel (each output is still one dot product in a fixed order).</summary>
    public static float[] Linear(float[] x, int rows, float[] w, int outputs, int inputs)
    {
        if ((long)rows * outputs * inputs < ParallelWork)
        {
            return Linear(x.AsSpan(), rows, w.AsSpan(), outputs, inputs);
        }

        var y = new float[rows * outputs];
        Parallel.For(0, outputs, o =>
        {
            var wo = w.AsSpan(o * inputs, inputs);
            for (var r = 0; r < rows; r++)
            {
                y[(r * outputs) + o] = Dot(x.AsSpan(r * inputs, inputs), wo);
            }
        });
        return y;
    }

    public static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        var i = 0;
        var acc = Vector<float>.Zero;
        for (; i <= a.Length - Vector<float>.Count; i += Vector<float>.Count)
        {
            acc += new Vector<float>(a[i..]) * new Vector<float>(b[i..]);
        }

        var sum = Vector.Sum(acc);
        for (; i < a.Length; i++)
        {
            sum += a[i] * b[i];
        }

        return sum;
    }

    public static float[] RmsNorm(ReadOnlySpan<float> x, int rows, ReadOnlySpan<float> weight, double eps)
    {
        var width = weight.Length;
        var y = new float[rows * width];
        for (var r = 0; r < rows; r++)
        {
            var xr = x.Slice(r * width, width);
            var meanSquare = 0.0;
            foreach (var v in xr)
            {
                meanSquare += (double)v * v;
            }

            var scale = 1.0 / Math.Sqrt((meanSquare / width) + eps);
            for (var i = 0; i < width; i++)
            {
                y[(r * width) + i] = (float)(xr[i] * scale) * weight[i];
            }
        }

        return y;
    }

    /// <summary>SwiGLU expert: w2 · (silu(w1 · x) ⊙ (w3 · x)).</summary>
    public static float[] SwiGlu(float[] x, int rows, ExpertWeights expert, int hidden, int ffn)
    {
        ArgumentNullException.ThrowIfNull(expert);
        var gate = Linear(x, rows, expert.W1, ffn, hidden);
        var up = Linear(x, rows, expert.W3, ffn, hidden);
        for (var i = 0; i < gate.Length; i++)
        {
            var g = gate[i];
            gate[i] = g / (1f + MathF.Exp(-g)) * up[i];
        }

        return Linear(gate, rows, expert.W2, hidden, ffn);
    }

    /// <summary>RoPE tables as Hugging Face builds them: angle(pos, i) = pos · inv_freq[i], halves duplicated, times <paramref name="scale"/>.</summary>
    public static (float[] Cos, float[] Sin) RopeTables(int positions, float[] invFreq, float scale)
    {
        ArgumentNullException.ThrowIfNull(invFreq);
        var half = invFreq.Length;
        var width = half * 2;
        var cos = new float[positions * width];
        var sin = new float[positions * width];
        for (var p = 0; p < positions; p++)
        {
            for (var i = 0; i < half; i++)
            {
                var angle = (double)(p * invFreq[i]);
                cos[(p * width) + i] = cos[(p * width) + i + half] = (float)Math.Cos(angle) * scale;
                sin[(p * width) + i] = sin[(p * width) + i + half] = (float)Math.Sin(angle) * scale;
            }
        }

        return (cos, sin);
    }
}
