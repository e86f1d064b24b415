using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using DanceMoE.Model;
using DanceMoE.Model.Locality;

namespace DanceMoE.Lab.Demo;

/// <summary>One way of storing the routed experts, at the demo's memory budget.</summary>
public sealed record BudgetRow(ExpertWeightFormat Format, long ExpertBytes, long Room, int ExpertsPerEdge, double BitsPerByte, double LocalShare);

/// <summary>
/// The demo's memory budget per edge (sized for fp32 experts, one edge per held-out domain) filled with fp32, fp16, int8
/// and int4 experts (<c>dancemoe model locality --demo-budget</c>). Each row routes the held-out samples through the
/// reference with that format's (dequantised) expert weights and reports the local share of expert calls when each edge
/// holds its own domain's most used experts, as many as fit, and every expert is somewhere.
/// </summary>
public sealed record DemoBudgetLocality(string Directory, int MemoryMb, int Edges, int RoutedExperts, IReadOnlyList<BudgetRow> Rows)
{
    public static async Task<DemoBudgetLocality> RunAsync(string directory, int maxBytes, CancellationToken cancellationToken)
    {
        var checkpoint = Checkpoint.Open(directory);
        var tokenizer = checkpoint.Tokenizer ?? throw new ModelFormatException($"{directory}: locality needs a byte-level tokenizer ({ByteTokenizer.FileName})");
        var domains = HeldOutTrace.Domains(directory);
        if (domains.Count < 2)
        {
            throw new ModelFormatException($"{directory}: locality needs held-out samples of at least two domains (found {domains.Count})");
        }

        var c = checkpoint.Config;
        var routed = c.RoutedLayers * c.NumExperts;
        var memoryMb = ClosedLoopDemo.DefaultMemoryMb(routed, domains.Count, ExpertQuantization.ExpertBytes(c, ExpertWeightFormat.Fp32));
        var weights = MoeWeights.Load(checkpoint);
        var rows = new List<BudgetRow>();
        foreach (var format in Enum.GetValues<ExpertWeightFormat>())
        {
            var stored = weights with
            {
                Layers = [.. weights.Layers.Select(l => l with { Experts = [.. l.Experts.Select(e => ExpertQuantization.RoundTrip(e, c, format))] })],
            };
            var model = new RoutedForward(stored);
            var traces = await Task.WhenAll(domains.Select(d => Task.Run(
                () => HeldOutTrace.Trace(model, tokenizer, d, HeldOutTrace.Sample(directory, d, maxBytes)), cancellationToken))).ConfigureAwait(false);
            var bytes = ExpertQuantization.ExpertBytes(c, format);
            var room = ((long)memoryMb << 20) / bytes;
            var held = (int)Math.Min(routed, room);
            var report = DomainLocality.Analyse(domains, [.. traces.Select(t => t.ExpertCounts)], (double)held / routed);
            var bitsPerByte = traces.Sum(t => t.BitsPerByte * t.Bytes) / traces.Sum(t => t.Bytes);
            rows.Add(new BudgetRow(format, bytes, room, held, bitsPerByte, report.LocalShareAware));
        }

        return new DemoBudgetLocality(directory, memoryMb, domains.Count, routed, rows);
    }

    public string ToJson() => new JsonObject
    {
        ["model"] = Directory,
        ["memory_mb"] = MemoryMb,
        ["edges"] = Edges,
        ["routed_experts"] = RoutedExperts,
        ["formats"] = new JsonArray([.. Rows.Select(r => (JsonNode)new JsonObject
        {
            ["expert_weights"] = r.Format.Name(),
            ["expert_bytes"] = r.ExpertBytes,
            ["room_for"] = r.Room,
            ["experts_per_edge"] = r.ExpertsPerEdge,
            ["bits_per_byte"] = r.BitsPerByte,
            ["local_share"] = r.LocalShare,
        })]),
    }.ToJsonString(new JsonSerializerOptions { WriteIndented = true });

    public string ToText()
    {
        var s = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        s.AppendLine(inv, $"{Directory}: the demo's budget of {MemoryMb} MiB on each of {Edges} edges, {RoutedExperts} routed experts");
        s.AppendLine("experts  bytes/expert  room for  experts per edge  bits/byte  local share of expert calls");
        foreach (var r in Rows)
        {
            s.AppendLine(inv, $"{r.Format.Name(),-7}  {r.ExpertBytes,12}  {r.Room,8}  {r.ExpertsPerEdge,7} ({(double)r.ExpertsPerEdge / RoutedExperts,6:P0})  {r.BitsPerByte,9:F4}  {r.LocalShare,8:F3}");
        }

        return s.ToString().TrimEnd();
    }
}
