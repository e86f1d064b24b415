using System.Diagnostics;
using DanceMoE.Contracts;
using DanceMoE.Hosting;
using DanceMoE.Inference;
using DanceMoE.Traces;
using MassTransit;
using MassTransit.Events;
using MassTransit.Metadata;
using Microsoft.Extensions.Logging;

namespace DanceMoE.Edge;

/// <summary>Generates text for a request that arrived at this edge (its origin) in the edge's step batch, with experts wherever they live.</summary>
public sealed class GenerateTextConsumer(
    EdgeRuntime edge, StepScheduler scheduler, GenerationCancellations cancellations, EdgeMetrics metrics, ILogger<GenerateTextConsumer> logger) : IConsumer<GenerateText>
{
    public async Task Consume(ConsumeContext<GenerateText> context)
    {
        var request = context.Message;
        var requestId = request.RequestId == Guid.Empty ? context.RequestId ?? NewId.NextGuid() : request.RequestId;
        var receivedAt = DateTimeOffset.UtcNow;
        // The summary's later times follow this monotonic clock from the arrival: a wall clock stepped back during the
        // request cannot put them before it (which the trace writer refuses).
        var clock = Stopwatch.StartNew();
        IReadOnlyList<int> promptIds;
        ReplayRouting? replay;
        UInt128 fingerprint;
        try
        {
            promptIds = edge.ValidateRequest(request);
            replay = request.ReplayRequest is { } replayId ? edge.ReplayRoutingOf(replayId, promptIds.Count + request.MaxNewTokens - 1) : null;
            fingerprint = edge.RequestIds.Claim(requestId, promptIds, request);
        }
        catch (InvalidRequestException ex)
        {
            await RefuseAsync(context, requestId, ex).ConfigureAwait(false);
            return;
        }

        var requestContext = new ForwardContext(requestId, recordRouting: true) { PlacementVersion = edge.Routing.Current.Version, Replay = replay };
        var ttft = TimeSpan.Zero;
        DateTimeOffset? firstTokenAt = null;
        var work = new GenerationWork(
            promptIds,
            request.MaxNewTokens,
            new SamplingOptions { Temperature = request.Temperature, TopP = request.TopP, Seed = (ulong)request.Seed },
            requestContext)
        {
            IgnoreEos = replay is not null,
            Deadline = context.ExpirationTime is { } expires ? new DateTimeOffset(expires, TimeSpan.Zero) : null,
            TokenProduced = (index, sincePrevious) =>
            {
                if (index == 0)
                {
                    ttft = clock.Elapsed;
                    firstTokenAt = receivedAt + ttft;
                }

                metrics.TokenProduced(index, sincePrevious);
            },
        };
        // The delivery's channel dying or the sender's cancel (CancelGeneration) ends the request at the next step.
        using var cancellation = cancellations.Register(requestId, RabbitMqOptions.SenderOf(context));
        if (cancellation.CancelledBeforeArrival)
        {
            // Its sender gave up before it arrived and waits for no answer: it never takes a place or a cache.
            const string reason = "cancelled by its sender before it arrived";
            metrics.RequestFinished("cancelled", 0, clock.Elapsed, 0, 0);
            edge.Traces.Add(Summary(RequestStatus.Cancelled, 0, reason));
            logger.LogInformation("{Edge}: request {RequestId} {Reason}; not served", edge.Options.Id, requestId, reason);
            return;
        }

        using var gaveUp = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, cancellation.Token);
        Task<GenerationResult> generation;
        try
        {
            generation = scheduler.GenerateAsync(work, gaveUp.Token);
        }
        catch (EdgeAtCapacityException ex)
        {
            await RefuseAsync(context, requestId, ex).ConfigureAwait(false);
            return;
        }

        GenerationResult result;
        try
        {
            // Not a step longer than the delivery lives: MassTransit cancels this token when the delivery's channel dies, and
            // RabbitMQ.Client tells the connection's other channels (the edge's other queues, its sends) that it died only once
            // this delivery returned. The broker delivers the request again; the scheduler drops this copy at its next step.
            result = await generation.WaitAsync(context.CancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (context.CancellationToken.IsCancellationRequested)
        {
            // No summary or rows: the request's row is written once (the first wins), by the delivery that serves it.
            metrics.RequestFinished("cancelled", 0, clock.Elapsed, requestContext.LocalExpertCalls, requestContext.RemoteExpertCalls);
            throw;
        }
        catch (Exception ex)
        {
            var status = ex is OperationCanceledException or TimeoutException ? "cancelled" : "failed";
            metrics.RequestFinished(status, 0, clock.Elapsed, requestContext.LocalExpertCalls, requestContext.RemoteExpertCalls);
            edge.WriteRouting(requestContext, fingerprint);
            edge.Traces.Add(Summary(status == "cancelled" ? RequestStatus.Cancelled : RequestStatus.Failed, 0, ex.Message));
            if (cancellation.Token.IsCancellationRequested)
            {
                // The sender cancelled and waits for no answer: the request is done with, not a fault to set aside.
                logger.LogInformation("{Edge}: {Reason}; it left the batch", edge.Options.Id, ex.Message);
                return;
            }

            throw;
        }

        edge.WriteRouting(requestContext, fingerprint);
        edge.Traces.Add(Summary(RequestStatus.Completed, result.TokenIds.Count, null));
        // A client that got its answer must find the request's rows, even if this edge is killed right after answering.
        edge.Traces.Persist();
        metrics.RequestFinished("completed", result.TokenIds.Count, clock.Elapsed, requestContext.LocalExpertCalls, requestContext.RemoteExpertCalls);

        await context.RespondAsync(new TextGenerated
        {
            RequestId = requestId,
            EdgeId = edge.Options.Id,
            TokenIds = result.TokenIds,
            Text = result.Text,
            StoppedAtEos = result.StoppedAtEos,
            Stats = new GenerationStats
            {
                PromptTokens = promptIds.Count,
                LocalExpertCalls = requestContext.LocalExpertCalls,
                RemoteExpertCalls = requestContext.RemoteExpertCalls,
                RemoteBatches = requestContext.RemoteBatches,
                RemoteBatchShare = Math.Round(requestContext.RemoteBatchShare, 3),
                RemoteBytes = requestContext.RemoteBytes,
                Retries = requestContext.Retries,
                LatencyMs = Math.Round(clock.Elapsed.TotalMilliseconds, 2),
                TtftMs = Math.Round(ttft.TotalMilliseconds, 2),
                TokensPerSecond = Math.Round(result.TokensPerSecond, 2),
                PlacementVersion = requestContext.PlacementVersion,
            },
        }).ConfigureAwait(false);

        RequestSummary Summary(RequestStatus status, int generated, string? error) => new()
        {
            RequestId = requestId,
            WorkloadTag = request.WorkloadTag,
            PromptTokens = promptIds.Count,
            Fingerprint = fingerprint,
            GeneratedTokens = generated,
            Status = status,
            Error = error,
            PlacementVersion = requestContext.PlacementVersion,
            ReceivedAt = receivedAt,
            FirstTokenAt = firstTokenAt,
            CompletedAt = receivedAt + clock.Elapsed,
            Communication = new RequestCommunication(
                (int)Math.Min(int.MaxValue, requestContext.RemoteBatches), requestContext.RemoteBatchShare, requestContext.RemoteBytes, requestContext.Retries),
        };
    }

    /// <summary>
    /// A request refused before it runs (invalid, or the edge at capacity) is the client's to fix or send elsewhere: one
    /// warning line, and the requester gets the fault it would get from a consumer that threw, without MassTransit's
    /// error-level R-FAULT and stack trace or an attempt to move the message to the <c>_error</c> queue.
    /// </summary>
    private async Task RefuseAsync(ConsumeContext<GenerateText> context, Guid requestId, Exception reason)
    {
        metrics.RequestRejected();
        logger.LogWarning("{Edge} refused request {RequestId} from broker user '{User}': {Reason}",
            edge.Options.Id, requestId, RabbitMqOptions.SenderOf(context) ?? "(none)", reason.Message);
        if (context.ResponseAddress is not null)
        {
            await context.RespondAsync<Fault<GenerateText>>(
                new FaultEvent<GenerateText>(context.Message, context.MessageId, HostMetadataCache.Host, reason, [.. context.SupportedMessageTypes])).ConfigureAwait(false);
        }
    }
}

/// <summary>A request the edge refuses before running it; the caller gets this message as the fault.</summary>
public sealed class InvalidRequestException(string message) : Exception(message);
