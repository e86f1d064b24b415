using System.ComponentModel.DataAnnotations;
using DanceMoE.Hosting;

namespace DanceMoE.Edge;

/// <summary>One edge server's identity, model, memory, placement and limits (section <c>Edge</c>, or the <c>dancemoe edge</c> command line).</summary>
public sealed class EdgeOptions : IValidatableObject
{
    public const string Section = "Edge";

    /// <summary>Edge id, for example <c>edge-1</c>; its queues are named after it (see <see cref="EdgeQueues"/>).</summary>
    [Required]
    [EdgeId]
    public string Id { get; set; } = "";

    /// <summary>
    /// The coordinator's RabbitMQ user (<c>Edge__CoordinatorUser</c>): control messages whose broker-checked <c>user_id</c>
    /// is another user are refused.
    /// </summary>
    [Required]
    public string CoordinatorUser { get; set; } = BusRoles.UserOf(BusRole.Coordinator);

    /// <summary>Directory of the exported model (its manifest.json).</summary>
    [Required]
    public string ModelDirectory { get; set; } = "";

    /// <summary>Memory the edge may spend on expert weights.</summary>
    [Range(1, 1_048_576)]
    public int MemoryMb { get; set; } = 1024;

    /// <summary>Placement file (JSON), or <c>uniform</c> with <see cref="UniformOver"/>; without it the edge holds every expert.</summary>
    public string? PlacementFile { get; set; }

    /// <summary>With <c>PlacementFile = uniform</c>: the edges every expert is spread over, once each, round-robin (comma-separated).</summary>
    public string? UniformOver { get; set; }

    /// <summary><c>auto</c>, <c>cuda</c> or <c>cpu</c>.</summary>
    [RegularExpression("^(auto|cuda|cpu)$")]
    public string Provider { get; set; } = "auto";

    /// <summary>What the edge computes on, free text for the coordinator (<c>edge_servers.compute_class</c>); unset: <see cref="ComputeClassProbe"/>.</summary>
    [MaxLength(ComputeClassProbe.MaxLength, ErrorMessage = "longer than 128 characters, the most the coordinator records")]
    public string? ComputeClass { get; set; }

    /// <summary>
    /// Intra-op threads of each ONNX Runtime session, one session per expert and per dense graph (0: one pool shared by
    /// all); at most the machine's cores.
    /// </summary>
    [Range(0, 64)]
    public int IntraOpThreads { get; set; } = 1;

    /// <summary>How long a remote expert batch may take before it is retried on another replica.</summary>
    [Range(50, 600_000)]
    public int ExpertDeadlineMs { get; set; } = 5000;

    [Range(1, 16_384)]
    public int MaxPromptTokens { get; set; } = 1024;

    /// <summary>The most <see cref="MaxNewTokens"/> any edge may be configured with: the most a client may ask of any edge.</summary>
    public const int MostNewTokens = 16_384;

    [Range(1, MostNewTokens)]
    public int MaxNewTokens { get; set; } = 512;

    /// <summary>Largest expert-batch payload accepted or sent (RabbitMQ's own limit is 128 MiB).</summary>
    [Range(1024, 128 << 20)]
    public int MaxBatchBytes { get; set; } = 16 << 20;

    /// <summary>
    /// Peers' expert batches run at once on this edge (0: one per core). Each runs on one core (intra-op threads 1), so
    /// more than the cores only makes each wait longer.
    /// </summary>
    [Range(0, 256)]
    public int ExpertConcurrency { get; set; }

    /// <summary>Requests that advance together, one step at a time (continuous batching).</summary>
    [Range(1, 1024)]
    public int MaxActive { get; set; } = 16;

    /// <summary>
    /// Requests that may wait for an active slot; one more is refused at once with a capacity fault. The requests queue's
    /// prefetch is <see cref="MaxActive"/> + this + 16, and AMQP's prefetch count is 16 bits: past 65535 it wrapped around.
    /// </summary>
    [Range(0, 64_000)]
    public int MaxWaiting { get; set; } = 64;

    /// <summary>Prompt tokens prefilled per step, over all new requests (a longer prompt is prefilled in chunks).</summary>
    [Range(1, 16_384)]
    public int MaxStepTokens { get; set; } = 256;

    [Range(0.1, 3600)]
    public double HeartbeatSeconds { get; set; } = 2;

    /// <summary>Emulated transfer time of expert weights into this edge when a migration loads one, in ms per MiB; 0 for none.</summary>
    [Range(0d, 1_000_000d)]
    public double LoadMsPerMb { get; set; }

    /// <summary>File written once the edge serves (its experts loaded, its queues consumed).</summary>
    public string? ReadyFile { get; set; }

    /// <summary>Replay file (<c>bench replay</c>): requests naming one of its ids are routed by its recorded routing; null: none are.</summary>
    public string? ReplayTrace { get; set; }

    /// <summary>Count every expert's activations per layer in the metrics (layers x experts series per edge).</summary>
    public bool ExpertMetrics { get; set; }

    public long MemoryBudgetBytes => (long)MemoryMb << 20;

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        // Every session gets a pool this large: 64 on 2 cores started 4930 threads for the default model's 64 experts, and a
        // DeepSeek-V2-Lite edge (1664 experts) would start about 100,000.
        if (IntraOpThreads > Environment.ProcessorCount)
        {
            yield return new ValidationResult(
                $"Edge:IntraOpThreads {IntraOpThreads} is more than this machine's {Environment.ProcessorCount} cores: each session (one per expert and dense graph) would get a pool this large",
                [nameof(IntraOpThreads)]);
        }

        if (ComputeClass is { } computeClass && computeClass.Any(char.IsControl))
        {
            yield return new ValidationResult("Edge:ComputeClass has a control character: one line of text", [nameof(ComputeClass)]);
        }
    }

    /// <summary>The edges of <see cref="UniformOver"/>; null when it is not set.</summary>
    public IReadOnlyList<string>? UniformEdges() =>
        UniformOver?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
}

/// <summary>The emulated network link of an edge for expert batches (section <c>Edge:Link</c>); all zero: none.</summary>
public sealed class LinkOptions
{
    public const string Section = "Edge:Link";

    /// <summary>Emulated one-way latency added to every expert batch this edge sends or answers (0: none).</summary>
    [Range(0d, 10_000d)]
    public double DelayMs { get; set; }

    /// <summary>Emulated bandwidth of this edge's link for expert batches, in Mbit/s (0: unlimited).</summary>
    [Range(0d, 1_000_000d)]
    public double Mbps { get; set; }
}

/// <summary>Whether and where an edge records its routing decisions and request summaries (section <c>Edge:Traces</c>).</summary>
public sealed class EdgeTraceOptions
{
    public const string Section = "Edge:Traces";

    /// <summary>Record routing decisions and request summaries in PostgreSQL (ConnectionStrings:postgres).</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Where trace rows spill while PostgreSQL is unreachable; null: the writer's default under the temp folder.</summary>
    public string? SpillDirectory { get; set; }
}
