using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using DanceMoE.Contracts;
using DanceMoE.Hosting;
using MassTransit;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;
using RabbitMQ.Client.Exceptions;

namespace DanceMoE.Edge;

/// <summary>
/// Expert batches between edges on RabbitMQ's client directly (<see cref="ExpertLaneQueues"/>): the binary body of
/// <see cref="ExpertBatchSerializer.Encode"/>, the batch id as correlation id, the sender's replies queue as reply-to,
/// the broker-checked <c>user_id</c>, non-persistent, no publisher confirms. MassTransit's send and receive pipelines cost
/// about 1.5 ms of CPU per remote batch; an edge at 16 concurrent requests is CPU-bound on them. The connection recovers
/// after a broker restart or a node's death, queues, bindings and consumers with it (the client's automatic recovery).
/// </summary>
public sealed class ExpertLane(IOptions<RabbitMqOptions> rabbit, IOptions<EdgeOptions> options, ILogger<ExpertLane> logger, EdgeMetrics? metrics = null) : IAsyncDisposable
{
    public const string BatchType = "run-expert-batch";
    public const string ResultType = "expert-batch-result";
    public const string FaultType = "expert-batch-fault";

    private static readonly TimeSpan RepublishInterval = TimeSpan.FromMilliseconds(100);

    // A reply publish that cannot finish (a connection dead mid-recovery) must not hold the lane; the asker gave up long before.
    private static readonly TimeSpan ReplyTimeout = TimeSpan.FromSeconds(30);

    private readonly RabbitMqBroker _broker = RabbitMqOptions.Parse(rabbit.Value.ConnectionString);
    private readonly string _edgeId = options.Value.Id;
    private readonly ConcurrentDictionary<string, PendingCall> _pending = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _publishing = new(1, 1);
    private IConnection? _connection;
    private IChannel? _publisher;
    private IChannel? _replies;

    /// <summary>The broker user of this edge: the only sender whose batches and answers it takes.</summary>
    public string User => _broker.Username;

    public IConnection Connection => _connection ?? throw new InvalidOperationException("the expert lane is not connected");

    /// <summary>Connects, declares the exchange and this edge's replies queue, and starts taking answers.</summary>
    public async Task ConnectAsync(CancellationToken cancellationToken)
    {
        var factory = _broker.ConnectionFactory($"{_edgeId} expert lane");
        factory.AutomaticRecoveryEnabled = true;
        factory.TopologyRecoveryEnabled = true;
        factory.NetworkRecoveryInterval = TimeSpan.FromSeconds(1);
        _connection = await factory.CreateConnectionAsync(_broker.Endpoints(), factory.ClientProvidedName, cancellationToken).ConfigureAwait(false);
        _publisher = await _connection.CreateChannelAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        await _publisher.ExchangeDeclareAsync(ExpertLaneQueues.Exchange, ExchangeType.Direct, durable: true, autoDelete: false, cancellationToken: cancellationToken).ConfigureAwait(false);

        _replies = await _connection.CreateChannelAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        var replies = ExpertLaneQueues.Replies(_edgeId);
        await DeclareAsync(_replies, replies, cancellationToken).ConfigureAwait(false);
        var consumer = new AsyncEventingBasicConsumer(_replies);
        consumer.ReceivedAsync += (_, delivery) =>
        {
            Answer(delivery);
            return Task.CompletedTask;
        };
        await _replies.BasicConsumeAsync(replies, autoAck: true, consumer, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Declares <paramref name="queue"/> (transient: nothing in it outlives its deadline) and binds it under its name.</summary>
    public static async Task DeclareAsync(IChannel channel, string queue, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(channel);
        await channel.QueueDeclareAsync(queue, durable: false, exclusive: false, autoDelete: true, cancellationToken: cancellationToken).ConfigureAwait(false);
        await channel.QueueBindAsync(queue, ExpertLaneQueues.Exchange, queue, cancellationToken: cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Sends <paramref name="batch"/> to edge <paramref name="peer"/> and waits for its answer: <see cref="RequestTimeoutException"/>
    /// after <paramref name="timeout"/>, <see cref="ExpertLaneException"/> when the peer refused it.
    /// </summary>
    public async Task<ExpertBatchResult> CallAsync(string peer, RunExpertBatch batch, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batch);
        var id = batch.BatchId.ToString("N", CultureInfo.InvariantCulture);
        var call = new PendingCall();
        var answer = call.Answer;
        if (!_pending.TryAdd(id, call))
        {
            throw new InvalidOperationException($"expert batch {batch.BatchId} is already in flight");
        }

        var sentBytes = 0;
        try
        {
            using var deadline = new CancellationTokenSource(timeout);
            await using var expired = deadline.Token.Register(() => answer.TrySetException(new RequestTimeoutException(id))).ConfigureAwait(false);
            await using var cancelled = cancellationToken.Register(() => answer.TrySetCanceled(cancellationToken)).ConfigureAwait(false);
            var properties = new BasicProperties
            {
                Type = BatchType,
                CorrelationId = id,
                ReplyTo = ExpertLaneQueues.Replies(_edgeId),
                UserId = User,
                DeliveryMode = DeliveryModes.Transient,
                // A batch is worth nothing after its deadline: the broker drops it rather than deliver it late.
                Expiration = ((long)Math.Ceiling(timeout.TotalMilliseconds)).ToString(CultureInfo.InvariantCulture),
            };
            using var giveUp = CancellationTokenSource.CreateLinkedTokenSource(deadline.Token, cancellationToken);
            try
            {
                var body = ExpertBatchSerializer.Encode(batch);
                await PublishAsync(ExpertLaneQueues.Batches(peer), properties, body, retry: true, giveUp.Token).ConfigureAwait(false);
                sentBytes = body.Length;
            }
            catch (OperationCanceledException) when (giveUp.IsCancellationRequested)
            {
                // The answer already holds the timeout or the caller's cancellation.
            }

            return await answer.Task.ConfigureAwait(false);
        }
        finally
        {
            _pending.TryRemove(id, out _);
            metrics?.PeerBatchBytes(peer, sentBytes, Volatile.Read(ref call.AnswerBytes));
        }
    }

    /// <summary>Answers a peer's batch with <paramref name="result"/>, or with a fault saying <paramref name="refusal"/>.</summary>
    public async Task ReplyAsync(IReadOnlyBasicProperties request, ExpertBatchResult? result, string? refusal)
    {
        ArgumentNullException.ThrowIfNull(request);
        var properties = new BasicProperties
        {
            Type = result is null ? FaultType : ResultType,
            CorrelationId = request.CorrelationId,
            UserId = User,
            DeliveryMode = DeliveryModes.Transient,
        };
        var body = result is null ? Encoding.UTF8.GetBytes(refusal ?? "refused") : ExpertBatchSerializer.Encode(result);
        using var giveUp = new CancellationTokenSource(ReplyTimeout);
        await PublishAsync(request.ReplyTo!, properties, body, retry: false, giveUp.Token).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var channel in new[] { _replies, _publisher })
        {
            if (channel is not null)
            {
                await channel.DisposeAsync().ConfigureAwait(false);
            }
        }

        if (_connection is not null)
        {
            await _connection.DisposeAsync().ConfigureAwait(false);
        }

        _publishing.Dispose();
    }

    /// <summary>
    /// Publishes on the lane; while the connection is down (a broker restarting, a node dead), tries again (with
    /// <paramref name="retry"/>) until it recovers, as a send waits for its bus to reconnect. Gives up with
    /// <see cref="OperationCanceledException"/> once <paramref name="giveUp"/> is cancelled (the batch's deadline), even
    /// in the middle of a publish that a dead connection would otherwise never finish.
    /// </summary>
    private async Task PublishAsync(string routingKey, BasicProperties properties, byte[] body, bool retry, CancellationToken giveUp)
    {
        var publisher = _publisher ?? throw new InvalidOperationException("the expert lane is not connected");
        while (true)
        {
            await _publishing.WaitAsync(giveUp).ConfigureAwait(false);
            try
            {
                await publisher.BasicPublishAsync(ExpertLaneQueues.Exchange, routingKey, mandatory: false, properties, body, giveUp).ConfigureAwait(false);
                return;
            }
            catch (OperationInterruptedException ex) when (retry && !giveUp.IsCancellationRequested)
            {
                logger.LogDebug("expert lane of {Edge} is down ({Reason}); publishing again once it recovers", _edgeId, ex.Message);
            }
            finally
            {
                _publishing.Release();
            }

            await Task.Delay(RepublishInterval, giveUp).ConfigureAwait(false);
        }
    }

    private void Answer(BasicDeliverEventArgs delivery)
    {
        var properties = delivery.BasicProperties;
        if (properties.CorrelationId is not { } id || !_pending.TryGetValue(id, out var call))
        {
            return;
        }

        if (properties.UserId != User)
        {
            logger.LogWarning("expert lane of {Edge}: an answer from user '{User}' ignored (only {Expected} answers)", _edgeId, properties.UserId, User);
            return;
        }

        Volatile.Write(ref call.AnswerBytes, delivery.Body.Length);
        var answer = call.Answer;
        if (properties.Type == FaultType)
        {
            answer.TrySetException(new ExpertLaneException(Encoding.UTF8.GetString(delivery.Body.Span)));
            return;
        }

        try
        {
            answer.TrySetResult(ExpertBatchSerializer.Decode<ExpertBatchResult>(delivery.Body.Span));
        }
        catch (InvalidDataException ex)
        {
            answer.TrySetException(new InvalidExpertResultException($"an answer to batch {id} is unreadable: {ex.Message}"));
        }
    }
}

/// <summary>A batch sent and waiting for its answer, and the size of the answer once it came (the link's bytes back).</summary>
internal sealed class PendingCall
{
    public TaskCompletionSource<ExpertBatchResult> Answer { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    // A field, so that the receiving thread hands it to the caller with Volatile.
    public int AnswerBytes;
}

/// <summary>A peer refused an expert batch sent on the lane; the message is the peer's reason.</summary>
public sealed class ExpertLaneException(string message) : Exception(message);
