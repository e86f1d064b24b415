using DanceMoE.Edge;
using DanceMoE.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;

// Flags as `dancemoe edge` (--id, --model DIR of an exported model, --memory-mb, ...) over Edge__* environment variables.
IConfiguration configuration;
try
{
    configuration = EdgeCommandLine.Build(args);
}
catch (HostFlagException ex)
{
    Console.Error.WriteLine($"dancemoe-edge: error: {ex.Message}");
    return 2;
}

var builder = ServiceHost.CreateBuilder(configuration);
builder.AddEdgeServer();
using var host = builder.Build();
try
{
    var edge = await host.StartEdgeAsync(CancellationToken.None).ConfigureAwait(false);
    Console.Error.WriteLine($"dancemoe-edge: {edge.Id} serves queues {EdgeQueues.Requests(edge.Id)}, {EdgeQueues.Experts(edge.Id)}, {EdgeQueues.Control(edge.Id)}");
}
catch (HostStartupException ex)
{
    Console.Error.WriteLine($"dancemoe-edge: error: {ex.Message}");
    return ex.ExitCode;
}

await host.WaitForShutdownAsync().ConfigureAwait(false);
return 0;
