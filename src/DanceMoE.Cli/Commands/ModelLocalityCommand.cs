using System.CommandLine;
using DanceMoE.Cli.Verbs;
using DanceMoE.Lab.Demo;
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
        var demoBudget = CliOptions.Flag("demo-budget", "instead: fp32, fp16, int8 and int4 experts side by side at the demo's memory budget");
        var command = new Command("locality", "how domain-specific the routing is and how much each placement keeps local") { model, fraction, bytes, json, demoBudget };
        command.SetAction((result, cancellationToken) => ModelCommand.Guarded(() => RunAsync(
            result.GetValue(model) ?? Path.Combine(CliEnvironment.RepositoryRoot, "onnx", "default"),
            result.GetValue(fraction),
            result.GetValue(bytes),
            result.GetValue(json),
            result.GetValue(demoBudget),
            cancellationToken)));
        return command;
    }

    private static async Task<int> RunAsync(string directory, double fraction, int maxBytes, bool asJson, bool demoBudget, CancellationToken cancellationToken)
    {
        if (demoBudget)
        {
            var budget = await DemoBudgetLocality.RunAsync(directory, maxBytes, cancellationToken).ConfigureAwait(false);
            Console.WriteLine(asJson ? budget.ToJson() : budget.ToText());
            return ExitCodes.Ok;
        }

        var study = await LocalityStudy.RunAsync(directory, fraction, maxBytes, cancellationToken).ConfigureAwait(false);
        Console.WriteLine(asJson ? study.ToJson() : study.ToText());
        return ExitCodes.Ok;
    }
}
