using DanceMoE.Edge;
using DanceMoE.Hosting;
using DanceMoE.Model;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace DanceMoE.Cli.Commands;

/// <summary><c>dancemoe edge</c>: one edge server process, until it is stopped.</summary>
public sealed class EdgeCommand : ICliCommand
{
    public string Verb => "edge";

    public string Usage =>
        "edge --id ID --model DIR --memory-mb N [--placement FILE | --placement uniform --uniform-over ID,ID,...] [--provider auto|cuda|cpu] [--threads N] "
        + "[--deadline-ms 5000] [--link-delay-ms 0] [--link-mbps 0] [--load-ms-per-mb 0] [--no-traces] [--trace-spill-dir DIR] [--ready-file FILE]";

    public async Task<int> RunAsync(Arguments args, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(args);
        var options = new EdgeOptions
        {
            Id = args.Required("id"),
            ModelDirectory = args.Required("model"),
            UniformOver = args.Option("uniform-over")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
            MemoryMb = args.Int("memory-mb", 1024, 1, 1_048_576),
            PlacementFile = args.Option("placement"),
            Provider = args.Option("provider") ?? "auto",
            IntraOpThreads = args.Int("threads", 1, 0, 64),
            ExpertDeadlineMs = args.Int("deadline-ms", 5000, 50, 600_000),
            LinkDelayMs = args.Double("link-delay-ms", 0, 0, 10_000),
            LinkMbps = args.Double("link-mbps", 0, 0, 1_000_000),
            LoadMsPerMb = args.Double("load-ms-per-mb", 0, 0, 1_000_000),
            HeartbeatSeconds = args.Double("heartbeat-seconds", 2, 0.1, 3600),
            ReadyFile = args.Option("ready-file"),
            TracesEnabled = !args.Flag("no-traces"),
            TraceSpillDirectory = args.Option("trace-spill-dir"),
        };
        args.EnsureAllUsed(0);
        if (options.PlacementFile == "uniform" && options.UniformOver is null)
        {
            throw new UsageException("--placement uniform needs --uniform-over ID,ID,... (the edges to spread the experts over)");
        }

        options.ModelDirectory = ModelCatalog.ResolveExported(options.ModelDirectory, line => Console.Error.WriteLine($"dancemoe edge: {line}"));
        IHost host;
        try
        {
            host = EdgeServer.Build(options, CliEnvironment.Configuration);
        }
        catch (Exception ex) when (ex is PlacementException or ExpertBudgetException or ModelFormatException or OptionsValidationException or FileNotFoundException)
        {
            throw new CliException(ex.Message, ExitCodes.Failed, ex);
        }

        using (host)
        {
            try
            {
                await host.StartAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is MassTransit.RabbitMqConnectionException or TimeoutException or OptionsValidationException)
            {
                throw new CliException($"{options.Id} cannot start its bus: {ex.Message}", ExitCodes.Unavailable, ex);
            }

            if (options.ReadyFile is { } ready)
            {
                await File.WriteAllTextAsync(ready, Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture), CancellationToken.None).ConfigureAwait(false);
            }

            Console.Error.WriteLine($"dancemoe edge: {options.Id} serves queues {EdgeQueues.Requests(options.Id)}, {EdgeQueues.Experts(options.Id)}, {EdgeQueues.Control(options.Id)}");
            await host.WaitForShutdownAsync(cancellationToken).ConfigureAwait(false);
        }

        return ExitCodes.Ok;
    }
}
