using DanceMoE.Contracts;
using DanceMoE.Edge;
using DanceMoE.Hosting;
using DanceMoE.Traces;
using MassTransit;

namespace DanceMoE.Operations;

/// <summary>Text generation requests to an edge, with MassTransit's request client: the way a .NET service does it.</summary>
public static class EdgeRequests
{
    private static readonly TimeSpan CancelTimeout = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Sends with a bus of its own once the edge's request queue is there and consumed, so that an unknown edge and a
    /// stopped one each fail at once with their own message instead of a timeout.
    /// </summary>
    public static async Task<TextGenerated> SendToRunningEdgeAsync(string rabbitMqUri, string edge, GenerateText request, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        CheckEdge(edge);
        if (TraceLimits.WorkloadTagProblem(request.WorkloadTag) is { } tagProblem)
        {
            throw new InvalidSettingsException($"--workload {tagProblem}");
        }

        var queue = EdgeQueues.Requests(edge);
        var consumers = await BusClient.ConsumersOfAsync(rabbitMqUri, queue, cancellationToken).ConfigureAwait(false);
        if (consumers is null)
        {
            throw new OperationException($"unknown edge '{edge}': no queue '{queue}' on the broker (./dancemoe cluster up starts edges)", OperationFailure.Unavailable);
        }

        if (consumers == 0)
        {
            throw new OperationException($"edge '{edge}' is not running: queue '{queue}' has no consumer", OperationFailure.Unavailable);
        }

        await using var client = await BusClient.StartAsync(rabbitMqUri, cancellationToken).ConfigureAwait(false);
        return await SendAsync(client.Requests, edge, request, timeout, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Sends through a running bus's <see cref="RequestChannel"/>; faults and timeouts become clear <see cref="OperationException"/>s. Cancelled by
    /// <paramref name="cancellationToken"/>, it tells the edge (<see cref="CancelGeneration"/>), which frees the request's slot
    /// at its next step instead of at the request's deadline.
    /// </summary>
    public static async Task<TextGenerated> SendAsync(RequestChannel requests, string edge, GenerateText request, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(requests);
        ArgumentNullException.ThrowIfNull(request);
        CheckEdge(edge);
        if (request.RequestId == Guid.Empty)
        {
            // The edge would name it after the request's message; the cancel must name the same request.
            request = request with { RequestId = NewId.NextGuid() };
        }

        // The timeout bounds the send as well: a request the broker does not confirm in time (its node lost) gives up with it.
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        try
        {
            var response = await requests.GetResponse<GenerateText, TextGenerated>(
                EdgeQueues.RequestsAddress(edge), request, RequestTimeout.After(ms: (int)timeout.TotalMilliseconds), deadline.Token).ConfigureAwait(false);
            return response.Message;
        }
        catch (SendRefusedException ex)
        {
            throw new OperationException($"cannot send the request to edge '{edge}': {ex.Message} (send as the client user: check {LocalEnvironment.RabbitMqSettingsOf(BusRole.Client)})", OperationFailure.InvalidSettings, ex);
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
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            await CancelAsync(requests, edge, request.RequestId).ConfigureAwait(false);
            throw;
        }
        catch (RequestFaultException ex) when (ex.Fault?.Exceptions.FirstOrDefault() is { } refusal && refusal.ExceptionType == typeof(InvalidRequestException).FullName)
        {
            // The edge refused what was asked, before any work: the caller's to change, as a usage error is.
            throw new InvalidSettingsException(refusal.Message, ex);
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

    /// <summary>Tells the edge its request is no longer wanted; if the cancel is lost, the request's deadline still ends it.</summary>
    private static async Task CancelAsync(RequestChannel requests, string edge, Guid requestId)
    {
        using var giveUp = new CancellationTokenSource(CancelTimeout);
        try
        {
            await requests.SendAsync(EdgeQueues.RequestsAddress(edge), new CancelGeneration { RequestId = requestId }, giveUp.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is OperationCanceledException or MassTransitException or TimeoutException or SendRefusedException)
        {
        }
    }

    private static void CheckEdge(string edge)
    {
        if (EdgeQueues.Problem(edge) is { } problem)
        {
            throw new InvalidSettingsException($"--edge: {problem}");
        }
    }
}
