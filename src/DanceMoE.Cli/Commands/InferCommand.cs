using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Text.Json;
using DanceMoE.Cli.Verbs;
using DanceMoE.Contracts;
using MassTransit;

namespace DanceMoE.Cli.Commands;

/// <summary><c>dancemoe infer</c>: sends one <see cref="GenerateText"/> to an edge and prints its answer.</summary>
public static class InferCommand
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    public static Command Create()
    {
        var edge = CliOptions.EdgeId("edge", "the edge to send the request to", required: true);
        var prompt = CliOptions.Prompt();
        var maxTokens = CliOptions.Int("max-tokens", 32, "tokens to generate at most (the edge may allow fewer)", 1, DanceMoE.Edge.EdgeOptions.MostNewTokens);
        var temperature = CliOptions.Double("temperature", 0, "sampling temperature (0: greedy)", 0, 100);
        var topP = CliOptions.Double("top-p", 1, "nucleus sampling threshold", 0.000001, 1);
        var seed = CliOptions.Int("seed", 0, "sampling seed", 0);
        var workload = CliOptions.Text("workload", "workload tag recorded with the routing traces", valueName: "TAG");
        var timeout = CliOptions.Int("timeout-seconds", 120, "how long to wait for the answer", 1, 3600);
        var json = CliOptions.Flag("json", "print the answer and its statistics as JSON");
        var requestId = new Option<Guid?>("--request-id")
        {
            Description = "the request's id (default: a new one); an id sent again is stored in the routing history once",
            HelpName = "GUID",
            CustomParser = ParseRequestId,
        };
        var command = new Command("infer", "send one request to an edge and print its answer") { edge, prompt, maxTokens, temperature, topP, seed, workload, timeout, json, requestId };
        command.SetAction((result, cancellationToken) => RunAsync(
            result.GetRequiredValue(edge),
            new GenerateText
            {
                RequestId = result.GetValue(requestId) ?? NewId.NextGuid(),
                Prompt = result.GetRequiredValue(prompt),
                MaxNewTokens = result.GetValue(maxTokens),
                Temperature = result.GetValue(temperature),
                TopP = result.GetValue(topP),
                Seed = result.GetValue(seed),
                WorkloadTag = result.GetValue(workload),
            },
            TimeSpan.FromSeconds(result.GetValue(timeout)),
            result.GetValue(json),
            cancellationToken));
        return command;
    }

    private static Guid? ParseRequestId(ArgumentResult result)
    {
        if (result.Tokens is [var token] && Guid.TryParse(token.Value, CultureInfo.InvariantCulture, out var id) && id != Guid.Empty)
        {
            return id;
        }

        result.AddError("--request-id: not a GUID other than all zeros (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)");
        return null;
    }

    private static async Task<int> RunAsync(string edge, GenerateText request, TimeSpan timeout, bool asJson, CancellationToken cancellationToken)
    {
        var answer = await EdgeRequests.SendToRunningEdgeAsync(CliEnvironment.RabbitMqUri, edge, request, timeout, cancellationToken).ConfigureAwait(false);
        if (asJson)
        {
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                answer.RequestId,
                answer.EdgeId,
                answer.TokenIds,
                answer.Text,
                answer.StoppedAtEos,
                Stats = answer.Stats,
            }, Json));
        }
        else
        {
            var s = answer.Stats;
            Console.WriteLine(Hosting.PrintableText.Of(answer.Text, keepLines: true));
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"[{answer.EdgeId}] {answer.TokenIds.Count} tokens in {s.LatencyMs:F0} ms; experts local {s.LocalExpertCalls}, remote {s.RemoteExpertCalls} in {s.RemoteBatches} batches ({s.RemoteBytes / 1024.0:F1} KiB); placement v{s.PlacementVersion}"));
        }

        return ExitCodes.Ok;
    }
}
