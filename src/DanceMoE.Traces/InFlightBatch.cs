namespace DanceMoE.Traces;

/// <summary>
/// The batch the flusher has taken (from memory or from a spill segment) and not yet written. It stays in hand across
/// failed attempts until PostgreSQL takes it, or until shutdown spills it.
/// </summary>
internal sealed class InFlightBatch
{
    public InFlightBatch(List<TraceItem> items, bool fromSpill, string? completesSegment = null, bool segmentCorrupt = false)
    {
        Items = items;
        FromSpill = fromSpill;
        CompletesSegment = completesSegment;
        SegmentCorrupt = segmentCorrupt;
        OldestAddedAtMs = items.Count > 0 ? items[0].AddedAtMs : Environment.TickCount64;
    }

    public List<TraceItem> Items { get; }

    /// <summary>Its rows are already on disk: a failure or a shutdown leaves them there, and they do not count as pending in memory.</summary>
    public bool FromSpill { get; }

    /// <summary>The spill segment this batch finishes, marked complete once the batch is written; null when more of it follows.</summary>
    public string? CompletesSegment { get; }

    /// <summary>The segment it finishes was damaged after these rows: kept aside for a person rather than deleted.</summary>
    public bool SegmentCorrupt { get; }

    /// <summary><see cref="Environment.TickCount64"/> when its oldest row was added, for the lag.</summary>
    public long OldestAddedAtMs { get; }

    /// <summary>Writes tried so far; a retry assumes an earlier attempt may have committed unheard.</summary>
    public int Attempts { get; set; }
}
