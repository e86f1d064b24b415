namespace DanceMoE.Model;

/// <summary>RoPE frequencies and attention scale of a config, shared by the reference and the exporter (YaRN as DeepSeek-V2 does it).</summary>
public static class Rotary
{
    /// <summary>inv_freq[i] = theta^(-2i/d) over the rotated dims; under YaRN blended with the interpolated ones by the ramp.</summary>
    public static float[] InverseFrequencies(MoeConfig c)
    {
        ArgumentNullException.ThrowIfNull(c);
        var dim = c.RopeDim;
        var extra = Enumerable.Range(0, dim / 2).Select(i => (float)(1.0 / Math.Pow(c.RopeTheta, 2.0 * i / dim))).ToArray();
        if (c.RopeScaling is not { } yarn)
        {
            return extra;
        }

        var low = Math.Max(Math.Floor(CorrectionDim(yarn.BetaFast, dim, c.RopeTheta, yarn.OriginalMaxPositions)), 0);
        var high = Math.Min(Math.Ceiling(CorrectionDim(yarn.BetaSlow, dim, c.RopeTheta, yarn.OriginalMaxPositions)), dim - 1);
        if (low == high)
        {
            high += 0.001;
        }

        var result = new float[dim / 2];
        for (var i = 0; i < result.Length; i++)
        {
            var inter = (float)(1.0 / (yarn.Factor * Math.Pow(c.RopeTheta, 2.0 * i / dim)));
            var mask = 1f - (float)Math.Clamp((i - low) / (high - low), 0, 1);
            result[i] = (inter * (1 - mask)) + (extra[i] * mask);
        }

        return result;
    }

    /// <summary>What cos and sin are multiplied by (YaRN's mscale / mscale_all_dim; 1 otherwise).</summary>
    public static float CosSinScale(MoeConfig c)
    {
        ArgumentNullException.ThrowIfNull(c);
        return c.RopeScaling is { } y ? (float)(Mscale(y.Factor, y.Mscale) / Mscale(y.Factor, y.MscaleAllDim)) : 1f;
    }

    /// <summary>1/sqrt(key head dim), times mscale² under YaRN with mscale_all_dim.</summary>
    public static float SoftmaxScale(MoeConfig c)
    {
        ArgumentNullException.ThrowIfNull(c);
        var scale = 1.0 / Math.Sqrt(c.KeyHeadDim);
        if (c.RopeScaling is { MscaleAllDim: not 0 } y)
        {
            var m = Mscale(y.Factor, y.MscaleAllDim);
            scale *= m * m;
        }

        return (float)scale;
    }

    private static double CorrectionDim(double rotations, int dim, double theta, int maxPositions) =>
        dim * Math.Log(maxPositions / (rotations * 2 * Math.PI)) / (2 * Math.Log(theta));

    private static double Mscale(double factor, double mscale) => factor <= 1 ? 1 : (0.1 * mscale * Math.Log(factor)) + 1;
}
