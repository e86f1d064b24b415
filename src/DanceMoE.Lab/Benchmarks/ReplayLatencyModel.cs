using DanceMoE.Placement;

namespace DanceMoE.Lab.Benchmarks;

/// <summary>
/// The simulator's <see cref="LatencyModel"/> calibrated from a replay run: expert time from the experts run here, the
/// emulated links, and what the bus adds per message and per byte for the messages and bytes the edges' wire format needs
/// (<see cref="Wire"/>). It models what a placement adds to a request beyond its home cost (every expert local, measured
/// here), which is added back.
/// </summary>
internal sealed class ReplayLatencyModel
{
    private const long WireRow = 2048L * sizeof(float);

    /// <summary>The cores the edges, the broker and the benchmark share: the run's processes are all on this machine.</summary>
    public static readonly int Cores = Environment.ProcessorCount;
    private static readonly MoeModel Nominal = MoeModel.DeepSeekV2Lite;
    private readonly ReplayBenchmarkSettings _settings;
    private readonly List<ServerSpec> _servers;
    private readonly HomeCosts _home;
    private readonly LatencyOptions _latency;
    private readonly ExpertPlacement _allLocal;

    public ReplayLatencyModel(ReplayBenchmarkSettings settings, IReadOnlyList<ServerSpec> servers, HomeCosts home, LatencyOptions latency)
    {
        _settings = settings;
        _home = home;
        _latency = latency;

        // One expert call is a + b x rows here: the model's max(bytes / bandwidth, rows x FLOPs / speed) with these speeds.
        _servers = [.. servers.Select(s => s with
        {
            MemoryBytesPerSecond = Nominal.ExpertBytes[0] / home.ExpertFixedSeconds,
            FlopsPerSecond = Nominal.FlopsPerToken(0, 0) / home.ExpertPerRowSeconds,
        })];
        _allLocal = new ExpertPlacement(servers.Count, Nominal.Layers, Nominal.Experts);
        for (var s = 0; s < servers.Count; s++)
        {
            for (var l = 0; l < Nominal.Layers; l++)
            {
                for (var e = 0; e < Nominal.Experts; e++)
                {
                    _allLocal.Add(s, l, e);
                }
            }
        }
    }

    /// <summary>
    /// What the bus carries for <paramref name="request"/> under <paramref name="placement"/>, as the edges send it: per
    /// step (the prompt, then each decoded position) and layer, one message per peer that runs any of the step's remote
    /// experts, with each token's hidden state once per peer and one output row back per (token, expert).
    /// </summary>
    public static WireCosts Wire(ExpertPlacement placement, ReplayedRequest request)
    {
        ArgumentNullException.ThrowIfNull(placement);
        ArgumentNullException.ThrowIfNull(request);
        var trace = request.Request;
        var k = trace.Experts[0].Length / trace.Tokens;
        var steps = new List<(int From, int To)> { (0, request.Prompt) };
        steps.AddRange(Enumerable.Range(request.Prompt, request.Decode).Select(p => (p, p + 1)));
        var wire = new WireCosts(0, 0, 0, 0, 0);
        var stepBytes = new List<WireStep>();
        var serverOf = new Dictionary<int, int>();
        var tokenServers = new HashSet<int>();
        for (var l = 0; l < placement.Layers; l++)
        {
            foreach (var (from, to) in steps)
            {
                serverOf.Clear();
                for (var t = from; t < to; t++)
                {
                    foreach (var e in trace.Experts[l].AsSpan(t * k, k))
                    {
                        if (!placement.Holds(request.Server, l, e) && !serverOf.ContainsKey(e))
                        {
                            serverOf[e] = Replica(placement, request.Server, l, e, serverOf.Values);
                        }
                    }
                }

                var rowsTo = new long[placement.Servers];
                for (var t = from; t < to; t++)
                {
                    tokenServers.Clear();
                    foreach (var e in trace.Experts[l].AsSpan(t * k, k))
                    {
                        if (serverOf.TryGetValue(e, out var server))
                        {
                            rowsTo[server] += tokenServers.Add(server) ? 2 : 1;
                        }
                    }

                    wire = wire with { Sends = wire.Sends + tokenServers.Count };
                }

                var rows = rowsTo.Sum();
                var messages = rowsTo.Count(r => r > 0);
                var decode = to - from == 1 && from >= request.Prompt;
                stepBytes.Add(new WireStep(decode, [.. rowsTo.Where(r => r > 0).Select(r => r * WireRow)]));
                wire = wire with
                {
                    Messages = wire.Messages + messages,
                    Bytes = wire.Bytes + (rows * WireRow),
                    DecodeMessages = wire.DecodeMessages + (decode ? messages : 0),
                    DecodeBytes = wire.DecodeBytes + (decode ? rows * WireRow : 0),
                };
            }
        }

        return wire with { Steps = stepBytes };
    }

    /// <summary>The replica of a remote expert: one the step already sends to if it holds it (fewer messages), else the first.</summary>
    private static int Replica(ExpertPlacement placement, int home, int layer, int expert, IEnumerable<int> used)
    {
        var holders = Enumerable.Range(0, placement.Servers).Where(s => s != home && placement.Holds(s, layer, expert)).ToList();
        return holders.Count == 0
            ? throw new InvalidOperationException($"layer {layer} expert {expert} is on no server")
            : holders.FirstOrDefault(used.Contains, holders[0]);
    }

    /// <summary>Mean bytes per (token, server) send each way under <paramref name="placement"/>, from <see cref="Wire"/>: the model's hidden state size.</summary>
    public static double BytesPerSend(ExpertPlacement placement, IEnumerable<ReplayedRequest> requests)
    {
        var wires = requests.Select(r => Wire(placement, r)).ToList();
        var sends = wires.Sum(w => w.Sends);
        return sends > 0 ? wires.Sum(w => (double)w.Bytes) / (2.0 * sends) : WireRow;
    }

    /// <summary>A request's modelled latency and decode time, in ms.</summary>
    public (double TotalMs, double DecodeMs) Latency(ExpertPlacement placement, ReplayedRequest request, BusCosts bus, double bytesPerSend) =>
        Latency(Parts(placement, request, bytesPerSend), bus);

    /// <summary>The bus costs that fit <paramref name="outcomes"/>' measured latencies best (least squares), from <paramref name="start"/>.</summary>
    public BusCosts Fit(ExpertPlacement placement, IReadOnlyList<ReplayOutcome> outcomes, double bytesPerSend, BusCosts start)
    {
        if (outcomes.Count == 0)
        {
            return start;
        }

        var parts = outcomes.Select(o => (Parts: Parts(placement, o.Request, bytesPerSend), o.LatencyMs)).ToList();
        double Error(BusCosts bus) => parts.Sum(p => Math.Pow(Latency(p.Parts, bus).TotalMs - p.LatencyMs, 2));

        var best = start;
        for (var round = 0; round < 3; round++)
        {
            var current = best;
            best = current with { SecondsPerCall = Minimise(x => Error(current with { SecondsPerCall = x }), 0, 0.05) };
            current = best;
            best = current with { SecondsPerByte = Minimise(x => Error(current with { SecondsPerByte = x }), 0, 200e-9) };
        }

        return best;
    }

    /// <summary>
    /// What a request costs beyond the bus's own work: its home cost (every expert local, measured), plus what the
    /// placement adds per the model (the emulated links, per pair and in parallel, and the experts where they run), and the
    /// wire it needs.
    /// </summary>
    private RequestParts Parts(ExpertPlacement placement, ReplayedRequest request, double bytesPerSend)
    {
        var model = new LatencyModel(Nominal with { HiddenBytes = (long)Math.Round(bytesPerSend) }, Cluster.FullMesh(_servers, LinkSpec.FromMbps(_settings.LinkMbps, 2 * _settings.LinkDelayMs)), _latency);
        var workload = new Workload([request.Request]);
        var placed = model.Evaluate(placement, workload);
        var local = model.Evaluate(_allLocal, workload);
        var (homeMs, homeDecodeMs) = _home.Requests[request];
        return new RequestParts(
            homeMs + placed.LatencyMsMean - local.LatencyMsMean,
            homeDecodeMs + ((placed.DecodeMsPerToken - local.DecodeMsPerToken) * request.Decode),
            request.Decode,
            Wire(placement, request));
    }

    /// <summary>
    /// What the bus does for a message (serialising, the broker, the peer's consumer, the answer back) is CPU work done one
    /// step after another, so a step's layer waits for its largest message; and all of the step's messages share this
    /// machine's cores. A step's layer costs the larger of the two.
    /// </summary>
    private static (double TotalMs, double DecodeMs) Latency(RequestParts parts, BusCosts bus)
    {
        var busSeconds = 0.0;
        var decodeBusSeconds = 0.0;
        foreach (var step in parts.Wire.Steps)
        {
            var slowest = 0.0;
            var sum = 0.0;
            foreach (var bytes in step.BytesPerPeer)
            {
                var message = bus.SecondsPerCall + (bytes * bus.SecondsPerByte);
                slowest = Math.Max(slowest, message);
                sum += message;
            }

            var seconds = Math.Max(slowest, sum / Cores);
            busSeconds += seconds;
            decodeBusSeconds += step.Decode ? seconds : 0;
        }

        return (parts.TotalMs + (busSeconds * 1e3), parts.Decode == 0 ? 0 : parts.DecodeMs + (decodeBusSeconds * 1e3));
    }

    private sealed record RequestParts(double TotalMs, double DecodeMs, int Decode, WireCosts Wire);

    /// <summary>Golden-section search for the minimum of a unimodal function on [lo, hi].</summary>
    private static double Minimise(Func<double, double> f, double lo, double hi)
    {
        var ratio = (Math.Sqrt(5) - 1) / 2;
        var a = hi - (ratio * (hi - lo));
        var b = lo + (ratio * (hi - lo));
        var (fa, fb) = (f(a), f(b));
        for (var i = 0; i < 30; i++)
        {
            if (fa < fb)
            {
                (hi, b, fb) = (b, a, fa);
                a = hi - (ratio * (hi - lo));
                fa = f(a);
            }
            else
            {
                (lo, a, fa) = (a, b, fb);
                b = lo + (ratio * (hi - lo));
                fb = f(b);
            }
        }

        return (lo + hi) / 2;
    }
}

/// <summary>
/// What a request sends over the bus: messages, (token, server) sends, and bytes both ways, in all and in its decode steps.
/// </summary>
public sealed record WireCosts(long Messages, long Sends, long Bytes, long DecodeMessages, long DecodeBytes)
{
    /// <summary>Each step's layer: whether it decodes one position, and the bytes of its message to each peer it needs (both ways).</summary>
    public IReadOnlyList<WireStep> Steps { get; init; } = [];
}

/// <summary>One step's layer on the wire: whether it decodes one position, and the bytes of each of its messages (both ways).</summary>
public sealed record WireStep(bool Decode, long[] BytesPerPeer);
