using System.Buffers.Binary;

namespace DanceMoE.Traces;

/// <summary>A request fingerprint as 16 bytes, big-endian (so <c>requests.fingerprint</c>'s hex reads as the number does): in the table and in spill files.</summary>
internal static class RequestFingerprints
{
    public const int Length = 16;

    public static byte[] ToBytes(UInt128 fingerprint)
    {
        var bytes = new byte[Length];
        BinaryPrimitives.WriteUInt128BigEndian(bytes, fingerprint);
        return bytes;
    }

    /// <summary>Null for bytes that are not 16 (not written by an edge): such a fingerprint tells nothing apart.</summary>
    public static UInt128? FromBytes(ReadOnlySpan<byte> bytes) => bytes.Length == Length ? BinaryPrimitives.ReadUInt128BigEndian(bytes) : null;
}
