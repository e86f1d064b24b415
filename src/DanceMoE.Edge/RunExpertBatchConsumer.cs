using System.Diagnostics;
using DanceMoE.Contracts;
using DanceMoE.Inference;
using MassTransit;

namespace DanceMoE.Edge;

/// <summary>
/// Runs an expert batch sent through MassTransit (tools, benchmarks' baselines; peers use <see cref="ExpertLane"/>) on
/// the experts this edge holds; anything malformed is refused with a fault.
/// </summary>
public sealed class RunExpertBatchConsumer(EdgeRuntime edge, ExpertBatchCalls calls) : IConsumer<RunExpertBatch>
{
    public async Task Consume(ConsumeContext<RunExpertBatch> context)
    {
        var batch = context.Message;
        edge.ValidateBatch(batch);
        edge.ExpertBatches.Enter();
        try
        {
            var result = Run(edge, batch);
            await edge.Link.TransmitAsync(result.Output.Length, context.CancellationToken).ConfigureAwait(false);
            await calls.ReplyAsync(context, result).ConfigureAwait(false);
        }
        finally
        {
            edge.ExpertBatches.Leave();
        }
    }

    /// <summary>
    /// The answer to a validated <paramref name="batch"/>: each slice's rows through its expert on this edge, and for each
    /// of its sum rows the weighted sum of its experts' outputs (<see cref="ExpertMix"/>, slices in order).
    /// </summary>
    public static ExpertBatchResult Run(EdgeRuntime edge, RunExpertBatch batch)
    {
        ArgumentNullException.ThrowIfNull(edge);
        ArgumentNullException.ThrowIfNull(batch);
        var clock = Stopwatch.StartNew();
        var hidden = batch.HiddenSize;
        var x = TensorBytes.ToFloats(batch.Hidden);
        var sumOf = new Dictionary<int, int>(batch.SumRows.Count);
        foreach (var row in batch.SumRows)
        {
            sumOf.Add(row, sumOf.Count);
        }

        var summedRows = sumOf.Count == 0 ? 0 : batch.Slices.Sum(s => s.TokenRows.Count(sumOf.ContainsKey));
        var rowsOut = batch.Slices.Sum(s => s.Rows) - summedRows;
        var output = new byte[(long)(rowsOut + sumOf.Count) * hidden * sizeof(float)];
        var sums = new float[sumOf.Count * hidden];
        var offset = 0;
        var inline = 0;
        foreach (var slice in batch.Slices)
        {
            var input = new float[slice.Rows * hidden];
            if (slice.TokenRows is { Count: > 0 } tokenRows)
            {
                for (var r = 0; r < slice.Rows; r++)
                {
                    x.AsSpan(tokenRows[r] * hidden, hidden).CopyTo(input.AsSpan(r * hidden));
                }
            }
            else
            {
                x.AsSpan(inline, input.Length).CopyTo(input);
                inline += input.Length;
            }

            var result = edge.Experts.Run(batch.Layer, slice.Expert, input, slice.Rows);
            for (var r = 0; r < slice.Rows; r++)
            {
                var y = result.AsSpan(r * hidden, hidden);
                if (sumOf.Count > 0 && sumOf.TryGetValue(slice.TokenRows[r], out var at))
                {
                    ExpertMix.AddWeighted(sums.AsSpan(at * hidden, hidden), slice.Weights[r], y);
                }
                else
                {
                    offset += TensorBytes.Write(y, output.AsSpan(offset));
                }
            }
        }

        TensorBytes.Write(sums, output.AsSpan(offset));
        return new ExpertBatchResult
        {
            BatchId = batch.BatchId,
            EdgeId = edge.Options.Id,
            Layer = batch.Layer,
            Slices = [.. batch.Slices.Select(s => new ExpertSlice { Expert = s.Expert, Rows = s.Rows })],
            Output = output,
            ComputeMs = Math.Round(clock.Elapsed.TotalMilliseconds, 3),
            QueueDepth = edge.ExpertBatches.Count - 1,
        };
    }
}

/// <summary>An expert batch this edge refuses: out of range, malformed, oversized, or for an expert it does not hold.</summary>
public sealed class InvalidExpertBatchException(string message) : Exception(message);
