using DanceMoE.Contracts;
using DanceMoE.Hosting;
using MassTransit;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>
/// The bounded load of <c>bench chaos</c>: a new request to every edge each <c>interval</c>, at most <c>perEdge</c> in flight
/// per edge. A client that gets no answer within an attempt, or cannot send, resends the same request id (the edges store
/// a request's routing rows once); a request answered by no attempt within the request timeout hung.
/// </summary>
internal sealed class ChaosLoad(RequestChannel requests, IReadOnlyList<string> edges, IReadOnlyList<string> prompts, int maxTokens, ChaosTimeouts timeouts, Action<string> log)
{
    private readonly object _gate = new();
    private readonly List<ChaosRequest> _requests = [];
    private readonly List<Task> _running = [];
    private volatile bool _stopping;
    private Task? _loop;

    public void Start(TimeSpan interval, int perEdge) => _loop = LoopAsync(interval, perEdge);

    /// <summary>Stops sending; requests in flight run to their answer or their timeout.</summary>
    public async Task StopAsync()
    {
        _stopping = true;
        if (_loop is not null)
        {
            await _loop.ConfigureAwait(false);
        }

        Task[] running;
        lock (_gate)
        {
            running = [.. _running];
        }

        await Task.WhenAll(running).ConfigureAwait(false);
    }

    public IReadOnlyList<ChaosRequest> Requests()
    {
        lock (_gate)
        {
            return [.. _requests];
        }
    }

    public int InFlight()
    {
        lock (_gate)
        {
            return _requests.Count(r => r.DoneAt is null);
        }
    }

    /// <summary>When every edge has answered a request sent at or after <paramref name="since"/>: the last of those first answers.</summary>
    public DateTimeOffset? AllEdgesAnsweredSince(DateTimeOffset since)
    {
        lock (_gate)
        {
            var firsts = edges.Select(e => _requests.Where(r => r.Edge == e && r.SentAt >= since && r.Answer is not null).Select(r => r.DoneAt).Min()).ToList();
            return firsts.All(f => f is not null) ? firsts.Max() : null;
        }
    }

    private async Task LoopAsync(TimeSpan interval, int perEdge)
    {
        var sent = 0;
        while (!_stopping)
        {
            foreach (var edge in edges)
            {
                lock (_gate)
                {
                    if (_requests.Count(r => r.Edge == edge && r.DoneAt is null) >= perEdge)
                    {
                        continue;
                    }

                    var request = new ChaosRequest(NewId.NextGuid(), edge, prompts[sent++ % prompts.Count], DateTimeOffset.UtcNow);
                    _requests.Add(request);
                    _running.Add(RunAsync(request));
                }
            }

            await Task.Delay(interval).ConfigureAwait(false);
        }
    }

    private async Task RunAsync(ChaosRequest request)
    {
        await Task.Yield();
        var message = new GenerateText { RequestId = request.Id, Prompt = request.Prompt, MaxNewTokens = maxTokens, WorkloadTag = "bench-chaos" };
        var deadline = request.SentAt + timeouts.Request;
        string? lastProblem = null;
        while (DateTimeOffset.UtcNow < deadline)
        {
            request.Attempts++;
            try
            {
                // The attempt's time bounds the send too: a send waiting for a broker that is away gives up with it (or is
                // left behind, should it not listen to its token).
                using var attempt = new CancellationTokenSource(timeouts.Attempt);
                var response = await requests.GetResponse<GenerateText, TextGenerated>(
                    EdgeQueues.RequestsAddress(request.Edge), message, RequestTimeout.After(ms: (int)timeouts.Attempt.TotalMilliseconds), attempt.Token).WaitAsync(timeouts.Attempt + TimeSpan.FromSeconds(5)).ConfigureAwait(false);
                Finish(request, response.Message, null);
                return;
            }
            catch (RequestFaultException ex)
            {
                Finish(request, null, ex.Fault?.Exceptions.FirstOrDefault()?.Message ?? ex.Message);
                log($"{request.Edge}: request {request.Id} FAILED: {request.Error}");
                return;
            }
            catch (Exception ex) when (ex is RequestTimeoutException or TimeoutException)
            {
                lastProblem = $"no answer within {timeouts.Attempt.TotalSeconds:F0} s";
            }
            catch (Exception ex) when (ex is MassTransitException or OperationCanceledException or RabbitMQ.Client.Exceptions.RabbitMQClientException or IOException)
            {
                // The broker is away: the send did not go out, or its answer cannot come back. Sent again a little later.
                lastProblem = $"{ex.GetType().Name}: {ex.Message}";
                await Task.Delay(TimeSpan.FromSeconds(1)).ConfigureAwait(false);
            }
        }

        request.Hung = true;
        Finish(request, null, $"hung: no answer within {timeouts.Request.TotalSeconds:F0} s ({request.Attempts} attempts; last: {lastProblem})");
        log($"{request.Edge}: request {request.Id} HUNG: {request.Error}");
    }

    private void Finish(ChaosRequest request, TextGenerated? answer, string? error)
    {
        lock (_gate)
        {
            request.Answer = answer;
            request.Error = error;
            request.DoneAt = DateTimeOffset.UtcNow;
        }
    }
}

internal sealed record ChaosTimeouts(TimeSpan Attempt, TimeSpan Request);

/// <summary>One request of the load: its answer, or its error (a fault) or that it hung.</summary>
internal sealed class ChaosRequest(Guid id, string edge, string prompt, DateTimeOffset sentAt)
{
    public Guid Id { get; } = id;

    public string Edge { get; } = edge;

    public string Prompt { get; } = prompt;

    public DateTimeOffset SentAt { get; } = sentAt;

    public DateTimeOffset? DoneAt { get; set; }

    public TextGenerated? Answer { get; set; }

    public string? Error { get; set; }

    public bool Hung { get; set; }

    public int Attempts { get; set; }
}
