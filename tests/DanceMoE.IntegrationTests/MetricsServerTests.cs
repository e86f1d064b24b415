using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using DanceMoE.Hosting.Metrics;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace DanceMoE.IntegrationTests;

public sealed class MetricsServerTests
{
    [Fact]
    public async Task Probes_still_answer_after_a_post_without_a_length_and_other_methods_get_405()
    {
        var port = TestPorts.Free();
        using var meter = new Meter("dancemoe.test.metrics-server");
        using var server = new MetricsServer(
            Options.Create(new MetricsOptions { Port = port }), [meter], new AlwaysReady(), NullLogger<MetricsServer>.Instance);
        server.Start();
        try
        {
            // What `curl -X POST URL` sends: the listener answers 411 itself and hands over a context already closed.
            Assert.StartsWith("HTTP/1.1 411", await RawAsync(port, "POST /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));

            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}/"), Timeout = TimeSpan.FromSeconds(10) };
            using var health = await http.GetAsync(new Uri("healthz", UriKind.Relative));
            Assert.Equal(HttpStatusCode.OK, health.StatusCode);
            using var delete = await http.DeleteAsync(new Uri("readyz", UriKind.Relative));
            Assert.Equal(HttpStatusCode.MethodNotAllowed, delete.StatusCode);
            Assert.Equal("GET, HEAD", string.Join(", ", delete.Content.Headers.Allow));
        }
        finally
        {
            await server.StopAsync(CancellationToken.None);
        }
    }

    private static async Task<string> RawAsync(int port, string request)
    {
        using var client = new TcpClient();
        await client.ConnectAsync(IPAddress.Loopback, port);
        var stream = client.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes(request));
        using var reader = new StreamReader(stream, Encoding.ASCII);
        return await reader.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(10)) ?? "";
    }

    private sealed class AlwaysReady : IReadinessCheck
    {
        public Readiness Check() => Readiness.Yes();
    }
}
