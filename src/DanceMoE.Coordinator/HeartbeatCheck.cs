using System.Text.RegularExpressions;
using DanceMoE.Contracts;
using DanceMoE.Hosting;

namespace DanceMoE.Coordinator;

/// <summary>
/// What the coordinator takes from a heartbeat before it counts: the membership decides where placements put experts,
/// so a malformed beat (an id no edge can have, a negative budget) is refused, and so is one dated ahead of the
/// coordinator's clock by more than <see cref="ClockSkew.Max"/>, which would keep its edge alive and its last word for as
/// long as its date stays ahead.
/// </summary>
public static partial class HeartbeatCheck
{
    /// <summary>More than any model's layers times experts; a list longer than this is no edge's.</summary>
    public const int MaxLoadedExperts = 1 << 16;

    public static string? Problem(EdgeHeartbeat beat, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(beat);
        if (EdgeQueues.Problem(beat.EdgeId) is { } id)
        {
            return id;
        }

        var problem = beat switch
        {
            { MemoryBudgetBytes: < 0 } => $"memory budget {beat.MemoryBudgetBytes} is negative",
            { MemoryUsedBytes: < 0 } => $"memory used {beat.MemoryUsedBytes} is negative",
            { QueueDepth: < 0 } => $"queue depth {beat.QueueDepth} is negative",
            { PlacementVersion: < 0 } => $"placement version {beat.PlacementVersion} is negative",
            { TraceRowsWritten: < 0 } or { TraceRowsPending: < 0 } or { TraceRowsSpilled: < 0 } => "a trace row count is negative",
            _ when !double.IsFinite(beat.ExpertMilliseconds) || beat.ExpertMilliseconds < 0 => $"expert time {beat.ExpertMilliseconds} ms is not a time",
            _ when !double.IsFinite(beat.TraceLagMs) || beat.TraceLagMs < 0 => $"trace lag {beat.TraceLagMs} ms is not a time",
            _ when !double.IsFinite(beat.HeartbeatSeconds) || beat.HeartbeatSeconds is < 0 or > MembershipOptions.MaxHeartbeatSeconds =>
                $"heartbeat interval {beat.HeartbeatSeconds} s is not 0 to {MembershipOptions.MaxHeartbeatSeconds}",
            _ when beat.ExecutionProvider is null || !ProviderName().IsMatch(beat.ExecutionProvider) => "execution provider is not 1 to 16 lowercase letters and digits",
            _ when beat.ComputeClass is { Length: > 128 } => $"compute class of {beat.ComputeClass.Length} characters (at most 128)",
            _ when beat.ComputeClass is { } computeClass && computeClass.Any(char.IsControl) => "compute class has a control character (one line of text)",
            _ when beat.LoadedExperts is null || beat.LoadedExperts.Count > MaxLoadedExperts => $"loaded experts missing or over {MaxLoadedExperts}",
            _ when beat.SentAt - now > ClockSkew.Max => $"sent at {beat.SentAt:O}, more than {ClockSkew.Max.TotalMinutes:0} minute ahead of the coordinator's clock",
            _ => null,
        };
        if (problem is not null)
        {
            return problem;
        }

        // A JSON null reaches a property the contract declares non-null.
        foreach (var key in beat.LoadedExperts ?? [])
        {
            if (key is null || !ExpertKey().IsMatch(key))
            {
                return $"loaded expert '{key}' is not a layer:expert key";
            }
        }

        return null;
    }

    [GeneratedRegex("^[a-z0-9]{1,16}$", RegexOptions.CultureInvariant)]
    private static partial Regex ProviderName();

    [GeneratedRegex("^[0-9]{1,5}:[0-9]{1,5}$", RegexOptions.CultureInvariant)]
    private static partial Regex ExpertKey();
}
