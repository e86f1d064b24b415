using System.Collections.Concurrent;
using DanceMoE.Contracts;
using MassTransit;

namespace DanceMoE.Edge;

/// <summary>
/// Expert batches sent to peers and their answers, matched by request id: one long-lived handler on this edge's bus
/// endpoint for every answer and one cached send endpoint per peer, instead of a request client's handle, response
/// handlers and timer per batch. A peer answers with <see cref="ReplyAsync"/>, through a send endpoint it keeps per
/// requester. Both sides measured cheaper in CPU per remote batch than the request client and <c>RespondAsync</c>.
/// </summary>
public sealed class ExpertBatchCalls(IBus bus) : IDisposable
{
    private const int MaxRemembered = 1024;

    private readonly ConcurrentDictionary<Guid, TaskCompletionSource<ExpertBatchResult>> _pending = new();
    private readonly ConcurrentDictionary<Uri, Task<ISendEndpoint>> _endpoints = new();
    private readonly Lock _connecting = new();
    private ConnectHandle[]? _handlers;

    /// <summary>
    /// Sends <paramref name="batch"/> to <paramref name="peer"/> and waits for its answer: <see cref="RequestTimeoutException"/>
    /// after <paramref name="timeout"/>, <see cref="RequestFaultException"/> when the peer refused it.
    /// </summary>
    public async Task<ExpertBatchResult> CallAsync(Uri peer, RunExpertBatch batch, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batch);
        ConnectHandlers();
        var answer = new TaskCompletionSource<ExpertBatchResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_pending.TryAdd(batch.BatchId, answer))
        {
            throw new InvalidOperationException($"expert batch {batch.BatchId} is already in flight");
        }

        try
        {
            using var deadline = new CancellationTokenSource(timeout);
            await using var expired = deadline.Token.Register(() => answer.TrySetException(new RequestTimeoutException(batch.BatchId.ToString()))).ConfigureAwait(false);
            await using var cancelled = cancellationToken.Register(() => answer.TrySetCanceled(cancellationToken)).ConfigureAwait(false);
            var endpoint = await EndpointOf(peer).ConfigureAwait(false);
            // A batch is worth nothing after its deadline and is never replayed: the broker keeps it in memory, not on disk.
            await endpoint.Send(batch, send =>
            {
                send.RequestId = batch.BatchId;
                send.ResponseAddress = bus.Address;
                send.TimeToLive = timeout;
                send.Durable = false;
                send.Serializer = ExpertBatchSerializer.Instance;
            }, cancellationToken).ConfigureAwait(false);
            return await answer.Task.ConfigureAwait(false);
        }
        finally
        {
            _pending.TryRemove(batch.BatchId, out _);
        }
    }

    /// <summary>Answers the batch of <paramref name="context"/> with <paramref name="result"/>, in the format it came in.</summary>
    public async Task ReplyAsync(ConsumeContext<RunExpertBatch> context, ExpertBatchResult result)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (context.ResponseAddress is not { } address)
        {
            await context.RespondAsync(result, send => send.Durable = false).ConfigureAwait(false);
            return;
        }

        var endpoint = await EndpointOf(address).ConfigureAwait(false);
        var binary = ExpertBatchSerializer.CameIn(context);
        await endpoint.Send(result, send =>
        {
            send.RequestId = context.RequestId;
            send.ConversationId = context.ConversationId;
            send.Durable = false;
            if (binary)
            {
                send.Serializer = ExpertBatchSerializer.Instance;
            }
        }, context.CancellationToken).ConfigureAwait(false);
    }

    public void Dispose()
    {
        foreach (var handler in _handlers ?? [])
        {
            handler.Dispose();
        }
    }

    private Task<ISendEndpoint> EndpointOf(Uri address)
    {
        if (_endpoints.TryGetValue(address, out var known))
        {
            if (!known.IsFaulted)
            {
                return known;
            }

            _endpoints.TryRemove(address, out _);
        }

        // Reply addresses come from senders: remembered within bounds.
        if (_endpoints.Count >= MaxRemembered)
        {
            _endpoints.Clear();
        }

        return _endpoints.GetOrAdd(address, bus.GetSendEndpoint);
    }

    private void ConnectHandlers()
    {
        if (Volatile.Read(ref _handlers) is not null)
        {
            return;
        }

        lock (_connecting)
        {
            _handlers ??=
            [
                bus.ConnectHandler<ExpertBatchResult>(context =>
                {
                    if (context.RequestId is { } id && _pending.TryGetValue(id, out var answer))
                    {
                        answer.TrySetResult(context.Message);
                    }

                    return Task.CompletedTask;
                }),
                bus.ConnectHandler<Fault<RunExpertBatch>>(context =>
                {
                    if (context.RequestId is { } id && _pending.TryGetValue(id, out var answer))
                    {
                        answer.TrySetException(new RequestFaultException(nameof(RunExpertBatch), context.Message));
                    }

                    return Task.CompletedTask;
                }),
            ];
        }
    }
}
