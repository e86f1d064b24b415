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
        try
        {
            var response = await requestClient.GetResponse<TextGenerated>(request, cancellationToken).ConfigureAwait(false);
            return response.Message;
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
