using System.CommandLine;
using DanceMoE.Cli.Verbs;
using DanceMoE.Edge;
using DanceMoE.Hosting;
using Microsoft.Extensions.Hosting;

namespace DanceMoE.Cli.Commands;

/// <summary><c>dancemoe edge</c>: one edge server process, until it is stopped; the same composition as the edge host.</summary>
public static class EdgeCommand
{
    /// <summary>The <c>edge</c> verb, whose flags are the edge host's (<see cref="EdgeCommandLine"/>).</summary>
    public static Command Create()
    {
        var id = CliOptions.EdgeId("id", "the edge's id (its queues are named after it)", required: true);
        var model = CliOptions.Text("model", "exported model, or a checkpoint (exported once into the state folder)", required: true, valueName: "DIR");
        var placement = CliOptions.Text("placement", "placement file, or 'uniform' (with --uniform-over)", valueName: "FILE|uniform");
        var uniformOver = CliOptions.EdgeId("uniform-over", "edges to spread the experts over with --placement uniform", list: true);
        var command = new Command("edge", "one edge server process, until it is stopped")
        {
            id,
            model,
            CliOptions.Int("memory-mb", 1024, "memory budget for experts, MiB", 1, 1_048_576),
            placement,
            uniformOver,
            CliOptions.Provider(),
            CliOptions.Text("compute-class", "what the edge computes on, as the coordinator records it (default: the GPU's or the CPU's model)", valueName: "TEXT"),
            CliOptions.Int("threads", 1, "intra-op threads per session (0: one pool shared by all sessions)", 0, Environment.ProcessorCount),
            CliOptions.Int("deadline-ms", 5000, "deadline of a remote expert call", 50, 600_000),
            CliOptions.Int("expert-concurrency", 0, "peers' expert batches run at once (0: one per core)", 0, 256),
            CliOptions.Int("max-active", 16, "requests batched together, one step at a time", 1, 1024),
            CliOptions.Int("max-waiting", 64, "requests that may wait for a slot; one more is refused at once", 0, 64_000),
            CliOptions.Int("max-step-tokens", 256, "prompt tokens prefilled per step over all new requests (longer prompts go in chunks)", 1, 16_384),
            CliOptions.Double("link-delay-ms", 0, "emulated one-way link delay", 0, 10_000),
            CliOptions.Double("link-mbps", 0, "emulated link bandwidth (0: unlimited)", 0, 1_000_000),
            CliOptions.Double("load-ms-per-mb", 0, "emulated expert load time per MB", 0, 1_000_000),
            CliOptions.Double("heartbeat-seconds", 2, "heartbeat interval", 0.1, 3600),
            CliOptions.Flag("no-traces", "do not record routing traces"),
            CliOptions.Text("trace-spill-dir", "where traces wait while PostgreSQL is unreachable", valueName: "DIR"),
            CliOptions.Text("ready-file", "file to write the process id to once the edge serves", valueName: "FILE"),
            CliOptions.OptionalInt("metrics-port", "serve /metrics, /healthz and /readyz over HTTP on this port (default: none)", 1, 65535),
            CliOptions.Text("metrics-host", "address the metrics listener binds (* for every interface)", "127.0.0.1"),
            CliOptions.Flag("expert-metrics", "count activations per layer and expert in the metrics (layers x experts series)"),
        };
        command.SetAction((result, cancellationToken) =>
        {
            if (result.GetValue(placement) == "uniform" && result.GetValue(uniformOver) is null)
            {
                throw new UsageException("--placement uniform needs --uniform-over ID,ID,... (the edges to spread the experts over)");
            }

            // The defaults above are EdgeOptions' own, so the flags given are the whole command line the edge host would get.
            var flags = CliOptions.Given(result, command.Options.Where(option => option != model));
            flags.Add("--model=" + ModelCatalog.ResolveExported(result.GetRequiredValue(model), line => Console.Error.WriteLine($"dancemoe edge: {line}")));
            return RunAsync(result.GetRequiredValue(id), flags, cancellationToken);
        });
        return command;
    }

    private static async Task<int> RunAsync(string id, List<string> flags, CancellationToken cancellationToken)
    {
        var builder = ServiceHost.CreateBuilder(EdgeCommandLine.Build(flags).WithLocalServices(BusRole.Edge));
        builder.AddEdgeServer();
        using var host = builder.Build();
        try
        {
            await host.StartEdgeAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (HostStartupException ex)
        {
            throw new CliException(ex.Message, ex.ExitCode, ex);
        }

        Console.Error.WriteLine($"dancemoe edge: {id} serves queues {EdgeQueues.Requests(id)}, {EdgeQueues.Experts(id)}, {EdgeQueues.Control(id)}");
        await host.WaitForShutdownAsync(cancellationToken).ConfigureAwait(false);
        return ExitCodes.Ok;
    }
}
