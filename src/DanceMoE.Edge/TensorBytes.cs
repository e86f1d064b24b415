using System.Runtime.InteropServices;

namespace DanceMoE.Edge;

/// <summary>float32 tensors as little-endian bytes on the wire (never JSON number arrays).</summary>
public static class TensorBytes
{
    public static byte[] FromFloats(ReadOnlySpan<float> values)
    {
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("tensor payloads are little-endian");
        }

        return MemoryMarshal.AsBytes(values).ToArray();
    }

    /// <summary>Writes <paramref name="values"/> into <paramref name="destination"/> and returns the bytes written.</summary>
    public static int Write(ReadOnlySpan<float> values, Span<byte> destination)
    {
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("tensor payloads are little-endian");
        }

        var bytes = MemoryMarshal.AsBytes(values);
        bytes.CopyTo(destination);
        return bytes.Length;
    }

    /// <summary>Reads the floats of <paramref name="bytes"/> into <paramref name="destination"/> and returns the bytes read.</summary>
    public static int Read(ReadOnlySpan<byte> bytes, Span<float> destination)
    {
        if (bytes.Length % sizeof(float) != 0)
        {
            throw new ArgumentException($"a float32 payload must be a multiple of 4 bytes, got {bytes.Length}", nameof(bytes));
        }

        MemoryMarshal.Cast<byte, float>(bytes).CopyTo(destination);
        return bytes.Length;
    }

    public static float[] ToFloats(ReadOnlySpan<byte> bytes)
    {
        var floats = new float[bytes.Length / sizeof(float)];
        Read(bytes, floats);
        return floats;
    }
}
