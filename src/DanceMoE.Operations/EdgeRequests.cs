using DanceMoE.Contracts;
using DanceMoE.Hosting;
using MassTransit;

namespace DanceMoE.Operations;

/// <summary>Text generation requests to an edge, with MassTransit's request client: the way a .NET service does it.</summary>
public static class EdgeRequests
{
    /// <summary>Sends on a running bus; faults and timeouts become clear <see cref="OperationException"/>s.</summary>
    public static async Task<TextGenerated> SendAsync(IBus bus, string edge, GenerateText request, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(bus);
        if (EdgeQueues.Problem(edge) is { } problem)
        {
            throw new InvalidSettingsException(problem);
        }

        var requestClient = bus.CreateRequestClient<GenerateText>(EdgeQueues.RequestsAddress(edge), RequestTimeout.After(ms: (int)timeout.TotalMilliseconds));

        // The timeout bounds the send as well: a request the broker does not confirm in time (its node lost) gives up with it.
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        try
        {
            var response = await requestClient.GetResponse<TextGenerated>(request, deadline.Token).ConfigureAwait(false);
            return response.Message;
        }
        catch (RequestException ex) when (ex.InnerException is MessageReturnedException)
        {
            throw new OperationException(
                $"edge '{edge}' is not serving: nobody has declared its request queue '{EdgeQueues.Requests(edge)}', so the broker returned the request (start the edge first)",
                OperationFailure.Unavailable, ex);
        }
        catch (OperationCanceledException ex) when (deadline.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw new OperationException($"edge '{edge}' did not answer within {timeout.TotalSeconds:F0} s (the broker had not confirmed the request)", OperationFailure.Unavailable, ex);
        }
        catch (RequestFaultException ex)
        {
            var reason = ex.Fault?.Exceptions.FirstOrDefault()?.Message ?? ex.Message;
            throw new OperationException($"edge '{edge}' refused or failed the request: {reason}", OperationFailure.Failed, ex);
        }
        catch (RequestTimeoutException ex)
        {
            throw new OperationException($"edge '{edge}' did not answer within {timeout.TotalSeconds:F0} s", OperationFailure.Unavailable, ex);
        }
    }
}
