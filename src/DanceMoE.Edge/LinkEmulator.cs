using Microsoft.Extensions.Options;

namespace DanceMoE.Edge;

/// <summary>
/// Emulates this edge's network link on one machine: every expert batch the edge sends or answers
/// waits its one-way delay plus its bytes over the bandwidth before it goes out. An emulation for
/// benchmarks and demos on loopback, not a traffic shaper.
/// </summary>
public sealed class LinkEmulator(IOptions<LinkOptions> options)
{
    private readonly LinkOptions _link = options.Value;

    public bool Enabled => _link.DelayMs > 0 || _link.Mbps > 0;

    public TimeSpan CostOf(long bytes) =>
        TimeSpan.FromMilliseconds(_link.DelayMs + (_link.Mbps > 0 ? bytes * 8.0 / (_link.Mbps * 1000.0) : 0));

    public Task TransmitAsync(long bytes, CancellationToken cancellationToken) =>
        Enabled ? Task.Delay(CostOf(bytes), cancellationToken) : Task.CompletedTask;
}
