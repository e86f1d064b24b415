using DanceMoE.Contracts;
using DanceMoE.Hosting;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;
using RabbitMQ.Client.Exceptions;

namespace DanceMoE.Edge;

/// <summary>
/// Peers' expert batches on this edge's lane queue (<see cref="ExpertLaneQueues.Batches"/>), run as many at once as
/// <see cref="EdgeOptions.ExpertConcurrency"/>. A batch from another broker user, over the size limit (checked before it
/// is read), malformed or for an expert not held here is answered with a fault that says why; none stops the consumer.
/// </summary>
public sealed class ExpertLaneConsumer(ExpertLane lane, EdgeRuntime edge, ILogger<ExpertLaneConsumer> logger) : IHostedService
{
    // The tensor is at most MaxBatchBytes; the slice list beside it is bounded like a command.
    private readonly long _maxBodyBytes = edge.Options.MaxBatchBytes + MessageSizeFilter.MaxCommandBytes;
    private IChannel? _channel;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await lane.ConnectAsync(cancellationToken).ConfigureAwait(false);
        var concurrency = edge.Options.ExpertConcurrency > 0 ? edge.Options.ExpertConcurrency : Environment.ProcessorCount;
        _channel = await lane.Connection.CreateChannelAsync(
            new CreateChannelOptions(publisherConfirmationsEnabled: false, publisherConfirmationTrackingEnabled: false, consumerDispatchConcurrency: (ushort)concurrency),
            cancellationToken).ConfigureAwait(false);
        var queue = ExpertLaneQueues.Batches(edge.Options.Id);
        await ExpertLane.DeclareAsync(_channel, queue, cancellationToken).ConfigureAwait(false);
        await _channel.BasicQosAsync(0, 32, global: false, cancellationToken).ConfigureAwait(false);
        var consumer = new AsyncEventingBasicConsumer(_channel);
        consumer.ReceivedAsync += (_, delivery) => ServeAsync(delivery);
        await _channel.BasicConsumeAsync(queue, autoAck: false, consumer, cancellationToken).ConfigureAwait(false);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_channel is not null)
        {
            await _channel.CloseAsync(cancellationToken).ConfigureAwait(false);
            await _channel.DisposeAsync().ConfigureAwait(false);
        }

        await lane.DisposeAsync().ConfigureAwait(false);
    }

    private async Task ServeAsync(BasicDeliverEventArgs delivery)
    {
        var request = delivery.BasicProperties;
        string? refusal = null;
        ExpertBatchResult? result = null;
        try
        {
            result = await RunAsync(request, delivery.Body, delivery.CancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // As MassTransit answers a consumer's exception with a fault: whatever a peer's batch breaks fails that batch alone.
            refusal = $"{edge.Options.Id} refused expert batch {request.CorrelationId}: {ex.Message}";
            logger.LogWarning("{Refusal}", refusal);
        }

        try
        {
            if (request.ReplyTo is { Length: > 0 } && request.CorrelationId is not null)
            {
                await lane.ReplyAsync(request, result, refusal).ConfigureAwait(false);
            }

            await _channel!.BasicAckAsync(delivery.DeliveryTag, multiple: false).ConfigureAwait(false);
        }
        catch (OperationInterruptedException ex)
        {
            // The connection went down meanwhile: the sender's deadline covers the lost answer.
            logger.LogDebug("{Edge}: the answer to expert batch {Batch} was lost with the connection ({Reason})", edge.Options.Id, request.CorrelationId, ex.Message);
        }
    }

    private async Task<ExpertBatchResult> RunAsync(IReadOnlyBasicProperties request, ReadOnlyMemory<byte> body, CancellationToken cancellationToken)
    {
        if (request.UserId != lane.User)
        {
            throw new InvalidExpertBatchException($"expert batches are taken from broker user {lane.User} only, not from '{request.UserId}'");
        }

        if (body.Length > _maxBodyBytes)
        {
            throw new InvalidExpertBatchException($"expert batch of {body.Length} bytes exceeds this edge's limit of {_maxBodyBytes} bytes");
        }

        if (request.Type != ExpertLane.BatchType)
        {
            throw new InvalidExpertBatchException($"a message of type '{request.Type}' is no expert batch");
        }

        var batch = ExpertBatchSerializer.Decode<RunExpertBatch>(body.Span);
        edge.ValidateBatch(batch);
        edge.ExpertBatches.Enter();
        try
        {
            var result = RunExpertBatchConsumer.Run(edge, batch);
            await edge.Link.TransmitAsync(result.Output.Length, cancellationToken).ConfigureAwait(false);
            return result;
        }
        finally
        {
            edge.ExpertBatches.Leave();
        }
    }
}
