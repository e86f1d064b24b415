using System.ComponentModel.DataAnnotations;
using DanceMoE.Placement;

namespace DanceMoE.Coordinator;

/// <summary>The placement job: when it runs, what it reads and how it decides (section <c>PlacementJob</c>).</summary>
public sealed class PlacementJobOptions : IValidatableObject
{
    public const string Section = "PlacementJob";

    /// <summary>Quartz cron expression (seconds first); default every 5 minutes.</summary>
    [Required]
    public string Cron { get; set; } = "0 0/5 * * * ?";

    /// <summary>One of <see cref="PlacementAlgorithms.Names"/>; <c>latency</c> also reads a sample of whole requests (<see cref="SampleRequests"/>).</summary>
    [Required]
    public string Algorithm { get; set; } = PlacementAlgorithms.DanceMoe;

    /// <summary>Most recent requests whose routing the <c>latency</c> algorithm reads from <c>routing_events</c> and plans for.</summary>
    [Range(1, 100_000)]
    public int SampleRequests { get; set; } = 200;

    /// <summary>Time budget of one solve: <c>latency</c> returns its best placement so far, other algorithms give up (a skipped run).</summary>
    [Range(0.1, 3600)]
    public double SolveSeconds { get; set; } = 30;

    /// <summary>How far back activation counts are read.</summary>
    [Range(1d, 7 * 24 * 60d)]
    public double WindowMinutes { get; set; } = 30;

    /// <summary>Age at which a minute of activations counts half; 0 for no decay.</summary>
    [Range(0d, 7 * 24 * 60d)]
    public double HalfLifeMinutes { get; set; } = 10;

    /// <summary>Horizon of the migration rule: the candidate must repay the migration within it.</summary>
    [Range(1d, 7 * 24 * 3600d)]
    public double HorizonSeconds { get; set; } = 300;

    [Range(1, 4096)]
    public int Layers { get; set; }

    /// <summary>Experts per layer; the placements table stores an expert id as a smallint.</summary>
    [Range(1, short.MaxValue + 1)]
    public int Experts { get; set; }

    /// <summary>
    /// The most layers x experts a run plans for: 16 x 65536 took 444 MB, 4096 x 65536 more than 4 GB within 30 s; the
    /// largest MoE models have about 25,000 (DeepSeek-V3: 61 x 256).
    /// </summary>
    public const int MaxExpertSlots = 1 << 18;

    [Range(1, 1024)]
    public int TopK { get; set; } = 2;

    /// <summary>Bytes of one expert's weights (the largest, when they differ).</summary>
    [Range(1, long.MaxValue)]
    public long ExpertBytes { get; set; } = 1;

    /// <summary>Bytes of one token's hidden row on the bus (float32): a remote expert costs one row in and one back.</summary>
    [Range(1, long.MaxValue)]
    public long HiddenBytes { get; set; } = 4096;

    [Range(0.001, 1e6)]
    public double BandwidthMbps { get; set; } = 500;

    [Range(0d, 10_000d)]
    public double RttMs { get; set; } = 2;

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (!PlacementAlgorithms.Names.Contains(Algorithm, StringComparer.Ordinal))
        {
            yield return new ValidationResult($"PlacementJob:Algorithm '{Algorithm}' is not one of {string.Join(", ", PlacementAlgorithms.Names)}", [nameof(Algorithm)]);
        }

        if (CronProblem(Cron) is { } problem)
        {
            yield return new ValidationResult($"PlacementJob:Cron '{Cron}' {problem}", [nameof(Cron)]);
        }

        if ((long)Layers * Experts > MaxExpertSlots)
        {
            yield return new ValidationResult(
                $"PlacementJob:Layers x Experts ({Layers} x {Experts}) is more than {MaxExpertSlots} expert slots: each run of the placement job would hold gigabytes",
                [nameof(Layers), nameof(Experts)]);
        }

        if (TopK > Experts)
        {
            yield return new ValidationResult($"PlacementJob:TopK {TopK} exceeds Experts {Experts}", [nameof(TopK)]);
        }
    }

    public static bool IsCron(string? expression) => CronProblem(expression) is null;

    /// <summary>Why <paramref name="expression"/> cannot schedule the job, or null. Quartz refuses to start with a trigger that never fires again (31 February, a past year).</summary>
    public static string? CronProblem(string? expression)
    {
        Quartz.CronExpression cron;
        try
        {
            cron = new Quartz.CronExpression(expression ?? "");
        }
        catch (Exception ex) when (ex is FormatException or ArgumentException)
        {
            return "is not a Quartz cron expression";
        }

        return cron.GetNextValidTimeAfter(DateTimeOffset.UtcNow) is null ? "never fires from now on" : null;
    }
}
