using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using DanceMoE.Cli.Verbs;
using DanceMoE.Model;
using DanceMoE.Model.Locality;

namespace DanceMoE.Cli.Commands;

/// <summary>
/// <c>dancemoe model locality</c>: routes each domain's held-out sample through our own forward and reports
/// how domain-specific the routing is and how much each placement keeps local.
/// </summary>
public static class ModelLocalityCommand
{
    public static Command Create()
    {
        var model = CliOptions.Text("model", "model directory with held-out samples of its domains (default: onnx/default)", valueName: "DIR");
        var fraction = CliOptions.Double("fraction", 0.3, "share of each layer's experts that fits on one server", 1e-9, 1);
        var bytes = CliOptions.Int("bytes", 0, "held-out bytes per domain (0: all)", 0);
        var json = CliOptions.Flag("json", "print the report as JSON");
        var command = new Command("locality", "how domain-specific the routing is and how much each placement keeps local") { model, fraction, bytes, json };
        command.SetAction((result, cancellationToken) => ModelCommand.Guarded(() => RunAsync(
            result.GetValue(model) ?? Path.Combine(CliEnvironment.RepositoryRoot, "onnx", "default"),
            result.GetValue(fraction),
            result.GetValue(bytes),
            result.GetValue(json),
            cancellationToken)));
        return command;
    }

    private static async Task<int> RunAsync(string directory, double fraction, int maxBytes, bool asJson, CancellationToken cancellationToken)
    {
        var checkpoint = Checkpoint.Open(directory);
        var tokenizer = checkpoint.Tokenizer ?? throw new CliException($"{directory}: locality needs a byte-level tokenizer ({ByteTokenizer.FileName})");
        var domains = HeldOutTrace.Domains(directory);
        if (domains.Count < 2)
        {
            throw new CliException($"{directory}: locality needs held-out samples of at least two domains (found {domains.Count})");
        }

        var model = new RoutedForward(MoeWeights.Load(checkpoint));
        var traces = await Task.WhenAll(domains.Select(d => Task.Run(
            () => HeldOutTrace.Trace(model, tokenizer, d, HeldOutTrace.Sample(directory, d, maxBytes)), cancellationToken))).ConfigureAwait(false);
        var report = DomainLocality.Analyse(domains, [.. traces.Select(t => t.ExpertCounts)], fraction);
        Console.WriteLine(asJson ? Json(directory, model.Config, traces, report) : Text(directory, model.Config, traces, report));
        return ExitCodes.Ok;
    }

    private static string Json(string directory, MoeConfig c, DomainTrace[] traces, LocalityReport r)
    {
        var layers = new JsonArray();
        foreach (var layer in r.Layers)
        {
            var distribution = new JsonObject();
            for (var d = 0; d < r.Domains.Count; d++)
            {
                distribution[r.Domains[d]] = new JsonArray([.. layer.Distribution[d].Select(p => (JsonNode)Math.Round(p, 5))]);
            }

            layers.Add(new JsonObject { ["layer"] = layer.Layer, ["tv_mean"] = layer.TvMean, ["distribution"] = distribution });
        }

        var root = new JsonObject
        {
            ["model"] = directory,
            ["layers"] = c.NumLayers,
            ["experts"] = c.NumExperts,
            ["top_k"] = c.TopK,
            ["domains"] = new JsonArray([.. r.Domains.Select(d => (JsonNode)d)]),
            ["heldout_bytes"] = new JsonObject(traces.Select(t => KeyValuePair.Create(t.Domain, (JsonNode?)t.Bytes))),
            ["bits_per_byte"] = new JsonObject(traces.Select(t => KeyValuePair.Create(t.Domain, (JsonNode?)t.BitsPerByte))),
            ["bits_per_byte_mean"] = traces.Average(t => t.BitsPerByte),
            ["fraction"] = r.Fraction,
            ["slots_per_layer"] = r.Slots,
            ["covered"] = r.Covered,
            ["tv_mean"] = r.TvMean,
            ["local_share_aware"] = r.LocalShareAware,
            ["local_share_agnostic"] = r.LocalShareAgnostic,
            ["local_share_popular"] = r.LocalSharePopular,
            ["local_share_uniform"] = r.LocalShareUniform,
            ["per_layer"] = layers,
        };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    private static string Text(string directory, MoeConfig c, DomainTrace[] traces, LocalityReport r)
    {
        var s = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        s.AppendLine(inv, $"{directory}: {c.NumLayers} layers x {c.NumExperts} experts, top-{c.TopK}; one server per domain");
        foreach (var t in traces)
        {
            s.AppendLine(inv, $"  {t.Domain,-8} {t.Bytes,7} held-out bytes  {t.BitsPerByte:F3} bits/byte");
        }

        s.AppendLine(inv, $"  mean {traces.Average(t => t.BitsPerByte):F3} bits/byte");
        s.AppendLine("expert distribution per domain (% of activations), expert 0 first:");
        foreach (var layer in r.Layers)
        {
            s.AppendLine(inv, $"  layer {layer.Layer}  TV between domains {layer.TvMean:F3}");
            for (var d = 0; d < r.Domains.Count; d++)
            {
                s.AppendLine(inv, $"    {r.Domains[d],-8} {string.Join(' ', layer.Distribution[d].Select(p => (p * 100).ToString("F0", inv).PadLeft(3)))}");
            }
        }

        s.AppendLine(inv, $"mean TV {r.TvMean:F3}");
        s.AppendLine(inv, $"local share with {r.Slots} of {c.NumExperts} experts per layer on each server ({r.Fraction:P0}){(r.Covered ? "" : ", too few slots to place every expert")}:");
        s.AppendLine(inv, $"  activation-aware        {r.LocalShareAware:F3}");
        s.AppendLine(inv, $"  agnostic, most used     {r.LocalSharePopular:F3}");
        s.Append(inv, $"  agnostic, uniform       {r.LocalShareUniform:F3}");
        return s.ToString();
    }
}
