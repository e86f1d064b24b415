using System.Globalization;
using System.Text.Json;
using DanceMoE.Contracts;
using DanceMoE.Hosting;
using MassTransit;

namespace DanceMoE.Cli.Commands;

/// <summary><c>dancemoe infer</c>: sends one <see cref="GenerateText"/> to an edge and prints its answer.</summary>
public sealed class InferCommand : ICliCommand
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    public string Verb => "infer";

    public string Usage =>
        "infer --edge ID --prompt TEXT --max-tokens N [--temperature 0] [--top-p 1] [--seed 0] [--workload TAG] [--timeout-seconds 120] [--json]";

    public async Task<int> RunAsync(Arguments args, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        var edge = args.Required("edge");
        var request = new GenerateText
        {
            RequestId = NewId.NextGuid(),
            Prompt = args.Required("prompt"),
            MaxNewTokens = args.Int("max-tokens", 32, 1, 1_000_000),
            Temperature = args.Double("temperature", 0, 0, 100),
            TopP = args.Double("top-p", 1, 0.000001, 1),
            Seed = args.Int("seed", 0, 0),
            WorkloadTag = args.Option("workload"),
        };
        var timeout = TimeSpan.FromSeconds(args.Int("timeout-seconds", 120, 1, 3600));
        var asJson = args.Flag("json");
        args.EnsureAllUsed(0);
        if (request.Prompt!.Length == 0)
        {
            throw new UsageException("--prompt is empty");
        }

        var answer = await SendAsync(CliEnvironment.RabbitMqUri, edge, request, timeout, cancellationToken).ConfigureAwait(false);
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
            Console.WriteLine(answer.Text);
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"[{answer.EdgeId}] {answer.TokenIds.Count} tokens in {s.LatencyMs:F0} ms; experts local {s.LocalExpertCalls}, remote {s.RemoteExpertCalls} in {s.RemoteBatches} batches ({s.RemoteBytes / 1024.0:F1} KiB); placement v{s.PlacementVersion}"));
        }

        return ExitCodes.Ok;
    }

    /// <summary>Sends a request to an edge with MassTransit's request client: the way a .NET service does it.</summary>
    public static async Task<TextGenerated> SendAsync(string rabbitMqUri, string edge, GenerateText request, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var queue = EdgeQueues.Requests(edge);
        var consumers = await BusClient.ConsumersOfAsync(rabbitMqUri, queue, cancellationToken).ConfigureAwait(false);
        if (consumers is null)
        {
            throw new CliException($"unknown edge '{edge}': no queue '{queue}' on the broker (./dancemoe cluster up starts edges)", ExitCodes.Unavailable);
        }

        if (consumers == 0)
        {
            throw new CliException($"edge '{edge}' is not running: queue '{queue}' has no consumer", ExitCodes.Unavailable);
        }

        await using var client = await BusClient.StartAsync(rabbitMqUri, cancellationToken).ConfigureAwait(false);
        return await SendAsync(client.Bus, edge, request, timeout, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Sends on a running bus; faults and timeouts become clear <see cref="CliException"/>s.</summary>
    public static async Task<TextGenerated> SendAsync(IBus bus, string edge, GenerateText request, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(bus);
        var requestClient = bus.CreateRequestClient<GenerateText>(EdgeQueues.RequestsAddress(edge), RequestTimeout.After(ms: (int)timeout.TotalMilliseconds));
        try
        {
            var response = await requestClient.GetResponse<TextGenerated>(request, cancellationToken).ConfigureAwait(false);
            return response.Message;
        }
        catch (RequestFaultException ex)
        {
            var reason = ex.Fault?.Exceptions.FirstOrDefault()?.Message ?? ex.Message;
            throw new CliException($"edge '{edge}' refused or failed the request: {reason}", ExitCodes.Failed, ex);
        }
        catch (RequestTimeoutException ex)
        {
            throw new CliException($"edge '{edge}' did not answer within {timeout.TotalSeconds:F0} s", ExitCodes.Unavailable, ex);
        }
    }
}
