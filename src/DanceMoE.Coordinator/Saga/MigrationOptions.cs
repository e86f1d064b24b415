using System.ComponentModel.DataAnnotations;

namespace DanceMoE.Coordinator.Saga;

/// <summary>How long each step of a migration may take (section <c>Migration</c>).</summary>
public sealed class MigrationOptions
{
    public const string Section = "Migration";

    /// <summary>An edge must answer a load within this (its transfer included), or the load is sent again once, then undone.</summary>
    [Range(0.1, 3600)]
    public double LoadTimeoutSeconds { get; set; } = 60;

    /// <summary>An edge must answer an unload within this.</summary>
    [Range(0.1, 3600)]
    public double UnloadTimeoutSeconds { get; set; } = 30;

    /// <summary>Every live edge must acknowledge a new placement version within this.</summary>
    [Range(0.1, 3600)]
    public double ActivationTimeoutSeconds { get; set; } = 30;

    /// <summary>
    /// After every edge routes by a version without a replica, the source waits this long before it unloads it, so that
    /// expert batches already on their way to it are served.
    /// </summary>
    [Range(0d, 600_000d)]
    public double DrainMilliseconds { get; set; } = 1000;

    /// <summary>Times a load or unload without an answer is sent again before the step fails.</summary>
    [Range(0, 10)]
    public int Retries { get; set; } = 1;

    /// <summary>How often the timeout job looks for steps past their deadline.</summary>
    [Range(50, 60_000)]
    public int TimeoutScanMilliseconds { get; set; } = 500;
}
