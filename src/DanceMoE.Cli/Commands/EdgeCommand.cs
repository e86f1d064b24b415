using System.Globalization;
using DanceMoE.Edge;
using DanceMoE.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;

namespace DanceMoE.Cli.Commands;

/// <summary><c>dancemoe edge</c>: one edge server process, until it is stopped; the same composition as the edge host.</summary>
public sealed class EdgeCommand : ICliCommand
{
    public string Verb => "edge";

    public string Usage =>
        "edge --id ID --model DIR --memory-mb N [--placement FILE | --placement uniform --uniform-over ID,ID,...] [--provider auto|cuda|cpu] [--threads N] "
        + "[--deadline-ms 5000] [--link-delay-ms 0] [--link-mbps 0] [--load-ms-per-mb 0] [--no-traces] [--trace-spill-dir DIR] [--ready-file FILE]";

    public async Task<int> RunAsync(Arguments args, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        var settings = new Dictionary<string, string?>(StringComparer.Ordinal);
        void Set(string flag, object? value)
        {
            if (value is not null)
            {
                settings[EdgeCommandLine.Switches[flag]] = Convert.ToString(value, CultureInfo.InvariantCulture);
            }
        }

        var id = args.Required("id");
        Set("--id", id);
        var model = args.Required("model");
        var uniformOver = args.Option("uniform-over");
        Set("--uniform-over", uniformOver);
        Set("--memory-mb", args.Int("memory-mb", 1024, 1, 1_048_576));
        var placement = args.Option("placement");
        Set("--placement", placement);
        Set("--provider", args.Option("provider") ?? "auto");
        Set("--threads", args.Int("threads", 1, 0, 64));
        Set("--deadline-ms", args.Int("deadline-ms", 5000, 50, 600_000));
        Set("--link-delay-ms", args.Double("link-delay-ms", 0, 0, 10_000));
        Set("--link-mbps", args.Double("link-mbps", 0, 0, 1_000_000));
        Set("--load-ms-per-mb", args.Double("load-ms-per-mb", 0, 0, 1_000_000));
        Set("--heartbeat-seconds", args.Double("heartbeat-seconds", 2, 0.1, 3600));
        Set("--ready-file", args.Option("ready-file"));
        Set("--traces", !args.Flag("no-traces"));
        Set("--trace-spill-dir", args.Option("trace-spill-dir"));
        args.EnsureAllUsed(0);
        if (placement == "uniform" && uniformOver is null)
        {
            throw new UsageException("--placement uniform needs --uniform-over ID,ID,... (the edges to spread the experts over)");
        }

        Set("--model", ModelCatalog.ResolveExported(model, line => Console.Error.WriteLine($"dancemoe edge: {line}")));
        var configuration = new ConfigurationBuilder().AddConfiguration(CliEnvironment.Configuration).AddInMemoryCollection(settings).Build();
        var builder = ServiceHost.CreateBuilder(configuration);
        builder.AddEdgeServer();
        using var host = builder.Build();
        try
        {
            await host.StartEdgeAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (EdgeStartupException ex)
        {
            throw new CliException(ex.Message, ex.BrokerUnreachable ? ExitCodes.Unavailable : ExitCodes.Failed, ex);
        }

        Console.Error.WriteLine($"dancemoe edge: {id} serves queues {EdgeQueues.Requests(id)}, {EdgeQueues.Experts(id)}, {EdgeQueues.Control(id)}");
        await host.WaitForShutdownAsync(cancellationToken).ConfigureAwait(false);
        return ExitCodes.Ok;
    }
}
