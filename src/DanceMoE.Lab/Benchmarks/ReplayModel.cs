using System.Diagnostics;
using DanceMoE.Inference;
using DanceMoE.Model;
using DanceMoE.Operations;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>
/// The model <c>bench replay</c> serves: DeepSeek-V2-Lite's routed shape (26 MoE layers x 64 experts, top-6) and hidden
/// size (2048: a token's rows cost the real model's bytes on the wire, as float32), with tiny experts and attention so
/// that four edges on two cores keep up. Seeded, written and exported once under the state folder.
/// </summary>
internal static class ReplayModel
{
    public static TinyOptions Options { get; } = new()
    {
        Seed = 14,
        Layers = 26,
        Experts = 64,
        TopK = 6,
        Hidden = 2048,
        Heads = 2,
        KvHeads = 1,
        HeadDim = 16,
        ExpertIntermediate = 8,
        MaxPositions = 2048,
    };

    public static string Description =>
        $"replay model: {Options.Layers} MoE layers x {Options.Experts} experts, top-{Options.TopK}, hidden {Options.Hidden}, expert intermediate {Options.Ffn}, "
        + $"{Options.Heads} heads of {Options.HeadDim}";

    /// <summary>The exported replay model's directory.</summary>
    public static string Resolve(Action<string> log)
    {
        var checkpoint = Path.Combine(LocalEnvironment.StateDirectory, "models", "replay-ds2lite-shape-v1");
        if (!File.Exists(Path.Combine(checkpoint, Checkpoint.ConfigFile)))
        {
            log($"writing the replay checkpoint to {checkpoint}");
            var staging = checkpoint + ".partial-" + Environment.ProcessId;
            TinyCheckpoint.Write(staging, Options);
            if (!Directory.Exists(checkpoint))
            {
                Directory.Move(staging, checkpoint);
            }
        }

        return ModelCatalog.ResolveExported(checkpoint, log);
    }
}

/// <summary>
/// Each replayed request run monolithically in this process (every expert local, no bus): what a request costs its
/// home edge under any placement, and the time of one expert call against its rows.
/// </summary>
internal sealed class LocalReplay : IDisposable
{
    private readonly SessionFactory _sessions = new(new InferenceOptions { Provider = ExecutionProvider.Cpu, IntraOpThreads = 1 });
    private readonly ExpertSessionPool _pool;
    private readonly TimedDispatcher _experts;
    private readonly MoeForward _forward;

    public LocalReplay(string exported)
    {
        var manifest = ModelManifest.Load(exported);
        _pool = new ExpertSessionPool(manifest, _sessions);
        _experts = new TimedDispatcher(new LocalExpertDispatcher(_pool));
        _forward = new MoeForward(manifest, _sessions, _experts);
    }

    /// <summary>Expert calls timed since the last take: rows and seconds; the list starts again empty.</summary>
    public List<(int Rows, double Seconds)> TakeExpertCalls() => _experts.Take();

    /// <summary>Runs the prompt as one step, then one token per step; returns the whole time and the decode part, in ms.</summary>
    public async Task<(double TotalMs, double DecodeMs)> RunAsync(ReplayRouting routing, int prompt, int decode, bool timeExperts, CancellationToken cancellationToken)
    {
        _experts.Recording = timeExperts;
        var context = new ForwardContext(Guid.NewGuid()) { Replay = routing };
        var state = _forward.NewState(prompt + decode);
        var clock = Stopwatch.StartNew();
        await _forward.ForwardAsync(ReplayPrompt.Tokens(prompt), state, context, cancellationToken).ConfigureAwait(false);
        var prefill = clock.Elapsed.TotalMilliseconds;
        for (var t = 0; t < decode; t++)
        {
            await _forward.ForwardAsync([ReplayPrompt.Token(prompt + t)], state, context, cancellationToken).ConfigureAwait(false);
        }

        var total = clock.Elapsed.TotalMilliseconds;
        return (total, total - prefill);
    }

    public void Dispose()
    {
        _forward.Dispose();
        _pool.Dispose();
    }

    private sealed class TimedDispatcher(IExpertDispatcher inner) : IExpertDispatcher
    {
        private List<(int Rows, double Seconds)> _calls = [];

        public bool Recording { get; set; }

        public List<(int Rows, double Seconds)> Take()
        {
            var taken = _calls;
            _calls = [];
            return taken;
        }

        public async ValueTask<DispatchResult> RunAsync(int layer, IReadOnlyList<ExpertBatch> batches, CancellationToken cancellationToken)
        {
            if (!Recording)
            {
                return await inner.RunAsync(layer, batches, cancellationToken).ConfigureAwait(false);
            }

            // One batch at a time, so that each call's time is its own.
            DispatchResult? last = null;
            var outputs = new List<float[]?>();
            var servedBy = new List<string>();
            foreach (var batch in batches)
            {
                var start = Stopwatch.GetTimestamp();
                last = await inner.RunAsync(layer, [batch], cancellationToken).ConfigureAwait(false);
                _calls.Add((batch.Rows, Stopwatch.GetElapsedTime(start).TotalSeconds));
                outputs.Add(last.Outputs[0]);
                servedBy.Add(last.ServedBy[0]);
            }

            return new DispatchResult(outputs, servedBy, last?.PlacementVersion ?? 0);
        }
    }
}

/// <summary>The token ids a replay feeds: any valid ids do, since the routing comes from the trace.</summary>
internal static class ReplayPrompt
{
    public static int Token(int position) => 3 + (position * 37 % 250);

    public static int[] Tokens(int count) => [.. Enumerable.Range(0, count).Select(Token)];
}
