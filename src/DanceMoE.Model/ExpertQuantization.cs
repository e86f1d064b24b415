namespace DanceMoE.Model;

/// <summary>
/// Weight-only, block-wise, asymmetric quantisation of expert projections: each run of <see cref="BlockSize"/> inputs
/// of an output row gets a float32 scale and an integer zero point so that its range, widened to include 0, spans all
/// 2^bits levels. Block 32 keeps the scales' cost at 1 bit per weight (int4: 4.625 bits a weight, 0.145x of fp32).
/// </summary>
public static class ExpertQuantization
{
    public const int BlockSize = 32;

    public static int Bits(this ExpertWeightFormat format) => format switch
    {
        ExpertWeightFormat.Int8 => 8,
        ExpertWeightFormat.Int4 => 4,
        _ => 0,
    };

    public static string Name(this ExpertWeightFormat format) => format.ToString().ToLowerInvariant();

    public static ExpertWeightFormat Parse(string name)
    {
        foreach (var format in Enum.GetValues<ExpertWeightFormat>())
        {
            if (format.Name() == name)
            {
                return format;
            }
        }

        throw new ModelFormatException($"unknown expert weight format '{name}' (expected fp32, fp16, int8 or int4)");
    }

    /// <summary>Weight bytes of one routed expert stored as <paramref name="format"/>: what its export's manifest records.</summary>
    public static long ExpertBytes(MoeConfig config, ExpertWeightFormat format)
    {
        ArgumentNullException.ThrowIfNull(config);
        var (hidden, ffn) = (config.HiddenSize, config.IntermediateSize);
        return format switch
        {
            ExpertWeightFormat.Fp32 => 3L * hidden * ffn * sizeof(float),
            ExpertWeightFormat.Fp16 => 3L * hidden * ffn * 2,
            _ => (2 * MatrixBytes(ffn, hidden, format.Bits())) + MatrixBytes(hidden, ffn, format.Bits()),
        };
    }

    /// <summary>Bytes of a quantised [rows, columns] matrix: packed values, a float32 scale and a zero point per block.</summary>
    public static long MatrixBytes(int rows, int columns, int bits, int blockSize = BlockSize)
    {
        var blocks = (columns + blockSize - 1) / blockSize;
        return ((long)rows * blocks * ((blockSize * bits / 8) + sizeof(float))) + ((long)rows * (((blocks * bits) + 7) / 8));
    }

    /// <summary>Quantises a row-major [rows, columns] matrix along its rows (a checkpoint projection [out, in]).</summary>
    public static QuantizedMatrix Quantize(ReadOnlySpan<float> w, int rows, int columns, int bits, int blockSize = BlockSize)
    {
        if (bits is not (4 or 8) || blockSize < 16 || (blockSize & (blockSize - 1)) != 0 || w.Length != rows * columns)
        {
            throw new ArgumentException($"cannot quantise {w.Length} values as [{rows}, {columns}] to {bits} bits in blocks of {blockSize}", nameof(w));
        }

        var levels = (1 << bits) - 1;
        var blocks = (columns + blockSize - 1) / blockSize;
        var empty = new QuantizedMatrix(rows, columns, bits, blockSize, [], [], []);
        var packed = new byte[rows * blocks * empty.BlockBytes];
        var scales = new float[rows * blocks];
        var zeroPoints = new byte[rows * empty.ZeroPointBytesPerRow];
        for (var r = 0; r < rows; r++)
        {
            for (var b = 0; b < blocks; b++)
            {
                var block = w.Slice((r * columns) + (b * blockSize), Math.Min(blockSize, columns - (b * blockSize)));
                var (min, max) = (0f, 0f);
                foreach (var value in block)
                {
                    (min, max) = (Math.Min(min, value), Math.Max(max, value));
                }

                var scale = max > min ? (max - min) / levels : 1f;
                var zero = (int)Math.Clamp(MathF.Round(-min / scale), 0, levels);
                scales[(r * blocks) + b] = scale;
                Put(zeroPoints, bits, (r * empty.ZeroPointBytesPerRow * 8 / bits) + b, zero);
                for (var i = 0; i < blockSize; i++)
                {
                    var q = i < block.Length ? (int)Math.Clamp(MathF.Round(block[i] / scale) + zero, 0, levels) : zero;
                    Put(packed, bits, (((r * blocks) + b) * blockSize) + i, q);
                }
            }
        }

        return empty with { Packed = packed, Scales = scales, ZeroPoints = zeroPoints };
    }

    /// <summary>The float32 matrix that ONNX Runtime computes with: (q − zero point) · scale.</summary>
    public static float[] Dequantize(QuantizedMatrix m)
    {
        ArgumentNullException.ThrowIfNull(m);
        var w = new float[m.Rows * m.Columns];
        for (var r = 0; r < m.Rows; r++)
        {
            for (var c = 0; c < m.Columns; c++)
            {
                var block = c / m.BlockSize;
                w[(r * m.Columns) + c] = (m.Value(r, c) - m.ZeroPoint(r, block)) * m.Scales[(r * m.BlocksPerRow) + block];
            }
        }

        return w;
    }

    /// <summary>An expert's weights as an export in <paramref name="format"/> computes with (the reference's oracle for it).</summary>
    public static ExpertWeights RoundTrip(ExpertWeights expert, MoeConfig config, ExpertWeightFormat format)
    {
        ArgumentNullException.ThrowIfNull(expert);
        ArgumentNullException.ThrowIfNull(config);
        var (hidden, ffn) = (config.HiddenSize, config.IntermediateSize);
        return format switch
        {
            ExpertWeightFormat.Fp32 => expert,
            ExpertWeightFormat.Fp16 => new ExpertWeights(ToHalf(expert.W1), ToHalf(expert.W2), ToHalf(expert.W3)),
            _ => new ExpertWeights(
                Dequantize(Quantize(expert.W1, ffn, hidden, format.Bits())),
                Dequantize(Quantize(expert.W2, hidden, ffn, format.Bits())),
                Dequantize(Quantize(expert.W3, ffn, hidden, format.Bits()))),
        };
    }

    private static float[] ToHalf(float[] w) => [.. w.Select(v => (float)(Half)v)];

    private static void Put(byte[] target, int bits, int index, int value)
    {
        if (bits == 8)
        {
            target[index] = (byte)value;
        }
        else
        {
            target[index / 2] |= (byte)(value << (index % 2 * 4));
        }
    }
}
