using System.Diagnostics;
using DanceMoE.Contracts;
using MassTransit;

namespace DanceMoE.Edge;

/// <summary>Runs a peer's expert batch on the experts this edge holds; anything malformed is refused with a fault.</summary>
public sealed class RunExpertBatchConsumer(EdgeRuntime edge, ExpertBatchCalls calls) : IConsumer<RunExpertBatch>
{
    public async Task Consume(ConsumeContext<RunExpertBatch> context)
    {
        var batch = context.Message;
        edge.ValidateBatch(batch);
        edge.ExpertBatches.Enter();
        try
        {
            await RunAsync(batch, context).ConfigureAwait(false);
        }
        finally
        {
            edge.ExpertBatches.Leave();
        }
    }

    private async Task RunAsync(RunExpertBatch batch, ConsumeContext<RunExpertBatch> context)
    {
        var clock = Stopwatch.StartNew();
        var hidden = batch.HiddenSize;
        var x = TensorBytes.ToFloats(batch.Hidden);
        var output = new byte[batch.Slices.Sum(s => s.Rows) * hidden * sizeof(float)];
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
            offset += TensorBytes.Write(result, output.AsSpan(offset));
        }

        var computeMs = clock.Elapsed.TotalMilliseconds;
        await edge.Link.TransmitAsync(output.Length, context.CancellationToken).ConfigureAwait(false);
        await calls.ReplyAsync(context, new ExpertBatchResult
        {
            BatchId = batch.BatchId,
            EdgeId = edge.Options.Id,
            Layer = batch.Layer,
            Slices = [.. batch.Slices.Select(s => new ExpertSlice { Expert = s.Expert, Rows = s.Rows })],
            Output = output,
            ComputeMs = Math.Round(computeMs, 3),
            QueueDepth = edge.ExpertBatches.Count - 1,
        }).ConfigureAwait(false);
    }
}

/// <summary>An expert batch this edge refuses: out of range, malformed, oversized, or for an expert it does not hold.</summary>
public sealed class InvalidExpertBatchException(string message) : Exception(message);
