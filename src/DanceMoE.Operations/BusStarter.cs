using DanceMoE.Hosting;
using MassTransit;
using RabbitMQ.Client.Exceptions;

namespace DanceMoE.Operations;

/// <summary>
/// Starts a bus for a front end. MassTransit tries an unreachable broker, and a receive endpoint whose queue the broker
/// refuses the user, again without end; here the start gives up after a time and ends at the first ACCESS_REFUSED, each
/// with one error that names the broker or the refusal and the setting to check.
/// </summary>
public static class BusStarter
{
    /// <summary>
    /// Starts <paramref name="bus"/> within <paramref name="timeout"/>; an error begins with <paramref name="doing"/> (what the bus is
    /// for: "cannot serve edge-1") and names <paramref name="setting"/>, the setting the URI came from, when there is one.
    /// </summary>
    public static async Task StartAsync(
        IBusControl bus, string rabbitMqUri, string? doing, string? setting, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(bus);
        var prefix = doing is null ? "" : doing + ": ";
        var refused = new TaskCompletionSource<OperationInterruptedException>(TaskCreationOptions.RunContinuationsAsynchronously);
        var observing = bus.ConnectReceiveEndpointObserver(new RefusalObserver(refused));
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        stop.CancelAfter(timeout);
        try
        {
            var starting = bus.StartAsync(stop.Token);
            if (await Task.WhenAny(starting, refused.Task).ConfigureAwait(false) != starting)
            {
                await stop.CancelAsync().ConfigureAwait(false);
                await ((Task)starting).WaitAsync(TimeSpan.FromSeconds(10), CancellationToken.None).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
                var reason = await refused.Task.ConfigureAwait(false);
                throw new OperationException(
                    $"{prefix}the broker refused access ({reason.ShutdownReason?.ReplyText ?? reason.Message}); check the user in {setting ?? LocalEnvironment.Redact(rabbitMqUri)}",
                    OperationFailure.InvalidSettings, reason);
            }

            await starting.ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is RabbitMqConnectionException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            var why = ex is OperationCanceledException ? new TimeoutException($"no connection within {timeout.TotalSeconds:F0} s", ex) : ex;
            throw Unreachable(rabbitMqUri, why, prefix, setting);
        }
        catch (RabbitMqConnectionException ex) when (cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException("cancelled while connecting", ex, cancellationToken);
        }
        finally
        {
            observing.Disconnect();
        }
    }

    /// <summary>The broker at <paramref name="rabbitMqUri"/> could not be reached (or refused the login: <see cref="OperationException.ServiceFailure"/> tells).</summary>
    internal static OperationException Unreachable(string rabbitMqUri, Exception ex, string prefix = "", string? setting = null) =>
        OperationException.ServiceFailure(
            $"{prefix}cannot connect to RabbitMQ at {LocalEnvironment.Redact(rabbitMqUri)}{(setting is null ? "" : $" (from {setting})")}", ex, setting);

    /// <summary>Reports a receive endpoint's first fault that is the broker's ACCESS_REFUSED.</summary>
    private sealed class RefusalObserver(TaskCompletionSource<OperationInterruptedException> refused) : IReceiveEndpointObserver
    {
        public Task Ready(ReceiveEndpointReady ready) => Task.CompletedTask;

        public Task Stopping(ReceiveEndpointStopping stopping) => Task.CompletedTask;

        public Task Completed(ReceiveEndpointCompleted completed) => Task.CompletedTask;

        public Task Faulted(ReceiveEndpointFaulted faulted)
        {
            ArgumentNullException.ThrowIfNull(faulted);
            if (ServiceRefusal.AccessRefusal(faulted.Exception) is { } refusal)
            {
                refused.TrySetResult(refusal);
            }

            return Task.CompletedTask;
        }
    }
}
