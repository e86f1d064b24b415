using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using DanceMoE.Contracts;

namespace DanceMoE.Edge;

/// <summary>
/// What each recent request id asked of this edge. The routing history keeps one request per id (a request served twice
/// stores its rows once), so another request under a used id would be served and then silently missing from it: it is
/// refused instead. A retry (the same request again after a broker failover, a redelivery, a resend) matches its claim
/// and is served. The newest <see cref="Capacity"/> ids are remembered, in this process only.
/// </summary>
public sealed class RequestIdClaims(string edgeId, int capacity = RequestIdClaims.DefaultCapacity)
{
    public const int DefaultCapacity = 16_384;

    private readonly Lock _gate = new();
    private readonly Dictionary<Guid, UInt128> _claims = [];
    private readonly Queue<Guid> _order = new();

    public int Capacity { get; } = capacity > 0 ? capacity : throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "at least 1");

    /// <summary>
    /// Claims <paramref name="requestId"/> for this request, or throws when it was claimed by another one. Returns the
    /// request's fingerprint, which its summary stores so that another edge's trace writer can tell a retry from a reuse.
    /// </summary>
    public UInt128 Claim(Guid requestId, IReadOnlyList<int> promptIds, GenerateText request)
    {
        var fingerprint = Fingerprint(promptIds, request);
        lock (_gate)
        {
            if (_claims.TryGetValue(requestId, out var claimed))
            {
                if (claimed != fingerprint)
                {
                    throw new InvalidRequestException(
                        $"request id {requestId} was already used on {edgeId} for another prompt or other settings; a new request needs a new id (a retry must repeat its request exactly)");
                }

                return fingerprint;
            }

            if (_order.Count == Capacity)
            {
                _claims.Remove(_order.Dequeue());
            }

            _claims.Add(requestId, fingerprint);
            _order.Enqueue(requestId);
        }

        return fingerprint;
    }

    /// <summary>Everything the request's answer and history depend on: the prompt's token ids (given as text or ids), the length, the sampling, the tag.</summary>
    private static UInt128 Fingerprint(IReadOnlyList<int> promptIds, GenerateText request)
    {
        var numbers = new long[promptIds.Count + 7];
        var i = 0;
        numbers[i++] = promptIds.Count;
        foreach (var id in promptIds)
        {
            numbers[i++] = id;
        }

        numbers[i++] = request.MaxNewTokens;
        numbers[i++] = BitConverter.DoubleToInt64Bits(request.Temperature);
        numbers[i++] = BitConverter.DoubleToInt64Bits(request.TopP);
        numbers[i++] = request.Seed;
        numbers[i++] = request.ReplayRequest ?? -1L;
        numbers[i] = request.WorkloadTag?.Length ?? -1;
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(MemoryMarshal.AsBytes(numbers.AsSpan()));
        hash.AppendData(Encoding.UTF8.GetBytes(request.WorkloadTag ?? ""));
        return BinaryPrimitives.ReadUInt128LittleEndian(hash.GetHashAndReset());
    }
}
