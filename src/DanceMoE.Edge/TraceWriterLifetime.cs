using DanceMoE.Traces;
using Microsoft.Extensions.Hosting;

namespace DanceMoE.Edge;

/// <summary>Starts the trace writer with the edge and, at shutdown, writes or spills what it still holds.</summary>
public sealed class TraceWriterLifetime(ITraceWriter traces) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        (traces as TraceWriter)?.Start();
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (traces is IAsyncDisposable disposable)
        {
            await disposable.DisposeAsync().ConfigureAwait(false);
        }
    }
}
