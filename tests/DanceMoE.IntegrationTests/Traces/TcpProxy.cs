using System.Net;
using System.Net.Sockets;

namespace DanceMoE.IntegrationTests.Traces;

/// <summary>
/// A loopback TCP forwarder in front of the real PostgreSQL that a test can cut (listener closed, every connection
/// reset, so PostgreSQL looks down) and restore on the same port.
/// </summary>
public sealed class TcpProxy : IAsyncDisposable
{
    private readonly string _targetHost;
    private readonly int _targetPort;
    private readonly Lock _lock = new();
    private readonly List<Socket> _sockets = [];
    private TcpListener? _listener;
    private CancellationTokenSource? _accepting;

    public TcpProxy(string targetHost, int targetPort)
    {
        _targetHost = targetHost;
        _targetPort = targetPort;
        Port = TestPorts.Free();
        Restore();
    }

    public int Port { get; }

    public int Accepted { get; private set; }

    public void Restore()
    {
        lock (_lock)
        {
            if (_listener is not null)
            {
                return;
            }

            var listener = new TcpListener(IPAddress.Loopback, Port);
            listener.Server.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            listener.Start();
            _listener = listener;
            _accepting = new CancellationTokenSource();
            _ = AcceptAsync(listener, _accepting.Token);
        }
    }

    public void Cut()
    {
        lock (_lock)
        {
            _accepting?.Cancel();
            _accepting?.Dispose();
            _accepting = null;
            _listener?.Stop();
            _listener = null;
            foreach (var socket in _sockets)
            {
                try
                {
                    socket.LingerState = new LingerOption(true, 0);
                }
                catch (Exception ex) when (ex is ObjectDisposedException or SocketException)
                {
                    // Its pump already closed it.
                }

                socket.Close();
            }

            _sockets.Clear();
        }
    }

    public ValueTask DisposeAsync()
    {
        Cut();
        return ValueTask.CompletedTask;
    }

    private async Task AcceptAsync(TcpListener listener, CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await listener.AcceptSocketAsync(cancellationToken);
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            var upstream = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await upstream.ConnectAsync(_targetHost, _targetPort, cancellationToken);
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException)
            {
                client.Close();
                upstream.Dispose();
                continue;
            }

            lock (_lock)
            {
                if (_listener != listener)
                {
                    client.Close();
                    upstream.Close();
                    return;
                }

                Accepted++;
                _sockets.Add(client);
                _sockets.Add(upstream);
            }

            _ = PumpAsync(client, upstream);
        }
    }

    private async Task PumpAsync(Socket a, Socket b)
    {
        await Task.WhenAny(CopyAsync(a, b), CopyAsync(b, a));
        lock (_lock)
        {
            _sockets.Remove(a);
            _sockets.Remove(b);
        }

        a.Close();
        b.Close();
    }

    private static async Task CopyAsync(Socket from, Socket to)
    {
        var buffer = new byte[1 << 16];
        try
        {
            while (true)
            {
                var read = await from.ReceiveAsync(buffer, SocketFlags.None);
                if (read == 0)
                {
                    return;
                }

                await to.SendAsync(buffer.AsMemory(0, read), SocketFlags.None);
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
        }
    }
}
