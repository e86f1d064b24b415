using System.ComponentModel.DataAnnotations;
using System.Text.RegularExpressions;

namespace DanceMoE.Hosting;

/// <summary>
/// The three queues of an edge, shared by the edge that consumes them and everyone who sends to them. An edge with id
/// <c>edge-1</c> (or just <c>1</c>) consumes <c>edge-1</c> (text generation), <c>edge-1-experts</c> (expert batches from
/// peers) and <c>edge-1-control</c> (loads, unloads, placements).
/// </summary>
public static partial class EdgeQueues
{
    public const int MaxIdLength = 63;

    public static string Requests(string edgeId) =>
        edgeId.StartsWith("edge-", StringComparison.Ordinal) ? edgeId : "edge-" + edgeId;

    /// <summary>Whether <paramref name="queue"/> is an edge's request queue (<c>edge-1</c>, not <c>edge-1-experts</c> or <c>edge-1-control</c>).</summary>
    public static bool IsRequests(string queue) => queue.StartsWith("edge-", StringComparison.Ordinal) && Problem(queue) is null;

    public static string Experts(string edgeId) => Requests(edgeId) + "-experts";

    public static string Control(string edgeId) => Requests(edgeId) + "-control";

    /// <summary>The request queue of <paramref name="edgeId"/>; <see cref="ArgumentException"/> for an id that would name another queue.</summary>
    public static Uri RequestsAddress(string edgeId) => ReplicatedQueues.SendAddress(Requests(ValidId(edgeId)));

    public static Uri ExpertsAddress(string edgeId) => ReplicatedQueues.TransientAddress(Experts(edgeId));

    public static Uri ControlAddress(string edgeId) => ReplicatedQueues.SendAddress(Control(edgeId));

    /// <summary>
    /// Why <paramref name="edgeId"/> cannot be an edge's id, in one line; null when it can. Every place an edge id enters
    /// (command lines, the edge's options) asks here, so that no id names another queue: an edge's experts or control
    /// queue, or the coordinator's.
    /// </summary>
    public static string? Problem(string? edgeId)
    {
        if (string.IsNullOrEmpty(edgeId))
        {
            return "the edge id is empty";
        }

        if (!IdPattern().IsMatch(edgeId))
        {
            return $"edge id '{Printable(edgeId)}' is not an edge id: 1 to {MaxIdLength} lowercase letters, digits and dashes, starting with a letter or digit (edge-1)";
        }

        var queue = Requests(edgeId);
        if (queue.EndsWith("-experts", StringComparison.Ordinal) || queue.EndsWith("-control", StringComparison.Ordinal))
        {
            return $"edge id '{edgeId}' names queue '{queue}', another queue of an edge (edge-1 serves edge-1, edge-1-experts and edge-1-control): give the edge's id";
        }

        if (edgeId.StartsWith("coordinator", StringComparison.Ordinal))
        {
            return $"edge id '{edgeId}' names the coordinator, not an edge";
        }

        return null;
    }

    /// <summary><paramref name="edgeId"/> itself; <see cref="ArgumentException"/> with <see cref="Problem"/> when it is no edge id.</summary>
    public static string ValidId(string edgeId) =>
        Problem(edgeId) is { } problem ? throw new ArgumentException(problem, nameof(edgeId)) : edgeId;

    /// <summary>An id for a message of one line: at most 40 characters, control characters as '?'.</summary>
    public static string Printable(string edgeId)
    {
        ArgumentNullException.ThrowIfNull(edgeId);
        var shown = edgeId.Length > 40 ? edgeId[..40] + $"... ({edgeId.Length} characters)" : edgeId;
        return string.Concat(shown.Select(c => char.IsControl(c) ? '?' : c));
    }

    [GeneratedRegex("^[a-z0-9][a-z0-9-]{0,62}$", RegexOptions.CultureInvariant)]
    private static partial Regex IdPattern();
}

/// <summary>An edge id as <see cref="EdgeQueues.Problem"/> accepts it, for options validated with data annotations.</summary>
[AttributeUsage(AttributeTargets.Property | AttributeTargets.Field | AttributeTargets.Parameter)]
public sealed class EdgeIdAttribute : ValidationAttribute
{
    protected override ValidationResult? IsValid(object? value, ValidationContext validationContext) =>
        EdgeQueues.Problem(value as string) is { } problem ? new ValidationResult(problem, validationContext is null ? null : [validationContext.MemberName ?? ""]) : ValidationResult.Success;
}
