using System.Runtime.InteropServices;

namespace DanceMoE.Model;

/// <summary>
/// A [rows, columns] matrix quantised block-wise along each row, in the layout of ONNX Runtime's MatMulNBits
/// (com.microsoft) with rows = N and columns = K: <see cref="Packed"/> is [rows, blocks, block·bits/8] with 4-bit
/// values low nibble first, <see cref="Scales"/> and <see cref="ZeroPoints"/> hold one value per (row, block)
/// (4-bit zero points two to a byte, each row padded to whole bytes), and w ≈ (q − zero point) · scale.
/// </summary>
public sealed record QuantizedMatrix(int Rows, int Columns, int Bits, int BlockSize, byte[] Packed, float[] Scales, byte[] ZeroPoints)
{
    public int BlocksPerRow => (Columns + BlockSize - 1) / BlockSize;

    public int BlockBytes => BlockSize * Bits / 8;

    public int ZeroPointBytesPerRow => ((BlocksPerRow * Bits) + 7) / 8;

    /// <summary>What the matrix takes once loaded: packed values, float32 scales and zero points.</summary>
    public long Bytes => Packed.Length + ((long)Scales.Length * sizeof(float)) + ZeroPoints.Length;

    public byte[] ScaleBytes => MemoryMarshal.AsBytes(Scales.AsSpan()).ToArray();

    public int Value(int row, int column)
    {
        var index = (((row * BlocksPerRow) + (column / BlockSize)) * BlockBytes * 8 / Bits) + (column % BlockSize);
        return Bits == 8 ? Packed[index] : (Packed[index / 2] >> (index % 2 * 4)) & 0xF;
    }

    public int ZeroPoint(int row, int block) =>
        Bits == 8 ? ZeroPoints[(row * BlocksPerRow) + block] : (ZeroPoints[(row * ZeroPointBytesPerRow) + (block / 2)] >> (block % 2 * 4)) & 0xF;
}
