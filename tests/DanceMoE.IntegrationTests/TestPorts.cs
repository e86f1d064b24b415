using DanceMoE.Operations;

namespace DanceMoE.IntegrationTests;

/// <summary>
/// Ports for listeners a test's processes bind seconds later. They come from below the kernel's ephemeral range, so an
/// outgoing connection (the parallel test assemblies open many) cannot take one in between, and never twice in a process.
/// </summary>
public static class TestPorts
{
    private const int Lowest = 20000;
    private static readonly HashSet<int> HandedOut = [];
    private static readonly Lock Gate = new();

    /// <summary>The first of <paramref name="count"/> consecutive free ports.</summary>
    public static int Free(int count = 1)
    {
        var highest = EphemeralRangeStart() - count;
        lock (Gate)
        {
            for (var attempt = 0; attempt < 200; attempt++)
            {
                var first = Random.Shared.Next(Lowest, highest);
                var ports = Enumerable.Range(first, count).ToList();
                if (ports.Any(HandedOut.Contains) || !ports.All(LocalCluster.PortIsFree))
                {
                    continue;
                }

                HandedOut.UnionWith(ports);
                return first;
            }
        }

        throw new InvalidOperationException($"no {count} consecutive free ports between {Lowest} and {highest}");
    }

    private static int EphemeralRangeStart()
    {
        const string RangeFile = "/proc/sys/net/ipv4/ip_local_port_range";
        var start = File.Exists(RangeFile) && int.TryParse(File.ReadAllText(RangeFile).Split('\t', ' ')[0], out var s) ? s : 32768;
        return Math.Max(start, Lowest + 1000);
    }
}
