using System.Globalization;
using System.Net;

namespace DanceMoE.IntegrationTests.Operations;

/// <summary>The local launcher's services listen on loopback only: AMQP, management, the broker's distribution port, epmd, PostgreSQL.</summary>
public sealed class LoopbackListenerTests
{
    private static int Port(string variable, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(variable), CultureInfo.InvariantCulture, out var port) ? port : fallback;

    [Fact]
    public void Every_port_of_the_local_services_listens_on_loopback_only()
    {
        var amqp = Port("DANCEMOE_AMQP_PORT", 5682);
        int[] ports = [amqp, amqp + 20000, Port("DANCEMOE_RABBITMQ_MANAGEMENT_PORT", 15682), Port("DANCEMOE_EPMD_PORT", 4382), Port("DANCEMOE_POSTGRES_PORT", 5442)];

        var listeners = Listening("/proc/net/tcp", ipv6: false).Concat(Listening("/proc/net/tcp6", ipv6: true)).Where(l => ports.Contains(l.Port)).ToList();

        Assert.Equal(ports.Order(), listeners.Select(l => l.Port).Distinct().Order());
        Assert.All(listeners, l => Assert.True(IPAddress.IsLoopback(l.Address), $"port {l.Port} listens on {l.Address}"));
    }

    /// <summary>The listening sockets of a /proc/net table: local address and port (state 0A is LISTEN).</summary>
    private static IEnumerable<(IPAddress Address, int Port)> Listening(string table, bool ipv6)
    {
        if (!File.Exists(table))
        {
            yield break;
        }

        foreach (var line in File.ReadLines(table).Skip(1))
        {
            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 4 || fields[3] != "0A")
            {
                continue;
            }

            var local = fields[1].Split(':');
            yield return (Address(local[0], ipv6), int.Parse(local[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture));
        }
    }

    // The kernel writes each 32-bit word of the address in host byte order (little-endian here).
    private static IPAddress Address(string hex, bool ipv6)
    {
        var bytes = Convert.FromHexString(hex);
        for (var word = 0; word < bytes.Length; word += 4)
        {
            Array.Reverse(bytes, word, 4);
        }

        var address = new IPAddress(bytes);
        return ipv6 && address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;
    }
}
