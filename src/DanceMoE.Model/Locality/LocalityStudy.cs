using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace DanceMoE.Model.Locality;

/// <summary>
/// Each domain's held-out sample routed through our own forward: how domain-specific the routing is and how much each
/// placement keeps local (<c>dancemoe model locality</c>).
/// </summary>
public sealed record LocalityStudy(string Directory, MoeConfig Config, IReadOnlyList<DomainTrace> Traces, LocalityReport Report)
{
    /// <summary>Routes the held-out samples of <paramref name="directory"/> (at most <paramref name="maxBytes"/> each; 0: all), one domain per task.</summary>
    public static async Task<LocalityStudy> RunAsync(string directory, double fraction, int maxBytes, CancellationToken cancellationToken)
    {
        var checkpoint = Checkpoint.Open(directory);
        var tokenizer = checkpoint.Tokenizer ?? throw new ModelFormatException($"{directory}: locality needs a byte-level tokenizer ({ByteTokenizer.FileName})");
        var domains = HeldOutTrace.Domains(directory);
        if (domains.Count < 2)
        {
            throw new ModelFormatException($"{directory}: locality needs held-out samples of at least two domains (found {domains.Count})");
        }

        var model = new RoutedForward(MoeWeights.Load(checkpoint));
        var traces = await Task.WhenAll(domains.Select(d => Task.Run(
            () => HeldOutTrace.Trace(model, tokenizer, d, HeldOutTrace.Sample(directory, d, maxBytes)), cancellationToken))).ConfigureAwait(false);
        var report = DomainLocality.Analyse(domains, [.. traces.Select(t => t.ExpertCounts)], fraction);
        return new LocalityStudy(directory, model.Config, traces, report);
    }

    /// <summary>The report of <c>model locality --json</c>.</summary>
    public string ToJson()
    {
        var layers = new JsonArray();
        foreach (var layer in Report.Layers)
        {
            var distribution = new JsonObject();
            for (var d = 0; d < Report.Domains.Count; d++)
            {
                distribution[Report.Domains[d]] = new JsonArray([.. layer.Distribution[d].Select(p => (JsonNode)Math.Round(p, 5))]);
            }

            layers.Add(new JsonObject { ["layer"] = layer.Layer, ["tv_mean"] = layer.TvMean, ["distribution"] = distribution });
        }

        var root = new JsonObject
        {
            ["model"] = Directory,
            ["layers"] = Config.RoutedLayers,
            ["experts"] = Config.NumExperts,
            ["top_k"] = Config.TopK,
            ["domains"] = new JsonArray([.. Report.Domains.Select(d => (JsonNode)d)]),
            ["heldout_bytes"] = new JsonObject(Traces.Select(t => KeyValuePair.Create(t.Domain, (JsonNode?)t.Bytes))),
            ["bits_per_byte"] = new JsonObject(Traces.Select(t => KeyValuePair.Create(t.Domain, (JsonNode?)t.BitsPerByte))),
            ["bits_per_byte_mean"] = Traces.Average(t => t.BitsPerByte),
            ["fraction"] = Report.Fraction,
            ["slots_per_layer"] = Report.Slots,
            ["covered"] = Report.Covered,
            ["tv_mean"] = Report.TvMean,
            ["local_share_aware"] = Report.LocalShareAware,
            ["local_share_agnostic"] = Report.LocalShareAgnostic,
            ["local_share_popular"] = Report.LocalSharePopular,
            ["local_share_uniform"] = Report.LocalShareUniform,
            ["per_layer"] = layers,
        };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>The report of <c>model locality</c> as text.</summary>
    public string ToText()
    {
        var s = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        s.AppendLine(inv, $"{Directory}: {Config.RoutedLayers} layers x {Config.NumExperts} experts, top-{Config.TopK}; one server per domain");
        foreach (var t in Traces)
        {
            s.AppendLine(inv, $"  {t.Domain,-8} {t.Bytes,7} held-out bytes  {t.BitsPerByte:F3} bits/byte");
        }

        s.AppendLine(inv, $"  mean {Traces.Average(t => t.BitsPerByte):F3} bits/byte");
        s.AppendLine("expert distribution per domain (% of activations), expert 0 first:");
        foreach (var layer in Report.Layers)
        {
            s.AppendLine(inv, $"  layer {layer.Layer}  TV between domains {layer.TvMean:F3}");
            for (var d = 0; d < Report.Domains.Count; d++)
            {
                s.AppendLine(inv, $"    {Report.Domains[d],-8} {string.Join(' ', layer.Distribution[d].Select(p => (p * 100).ToString("F0", inv).PadLeft(3)))}");
            }
        }

        s.AppendLine(inv, $"mean TV {Report.TvMean:F3}");
        s.AppendLine(inv, $"local share with {Report.Slots} of {Config.NumExperts} experts per layer on each server ({Report.Fraction:P0}){(Report.Covered ? "" : ", too few slots to place every expert")}:");
        s.AppendLine(inv, $"  activation-aware        {Report.LocalShareAware:F3}");
        s.AppendLine(inv, $"  agnostic, most used     {Report.LocalSharePopular:F3}");
        s.Append(inv, $"  agnostic, uniform       {Report.LocalShareUniform:F3}");
        return s.ToString();
    }
}
