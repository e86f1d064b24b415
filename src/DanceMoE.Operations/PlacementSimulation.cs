using System.Diagnostics;
using System.Globalization;
using DanceMoE.Model;
using DanceMoE.Placement;

namespace DanceMoE.Operations;

/// <summary>What <c>placement simulate</c> models: one server per workload domain, each with a memory budget and a relative speed.</summary>
/// <param name="Domains">One server per domain, named as in the trace files.</param>
/// <param name="MemoryShare">The share of all experts' bytes each server holds, unless <paramref name="MemoryMb"/> is given.</param>
/// <param name="MemoryMb">Each server's budget in MB, one per server.</param>
/// <param name="Speeds">Each server's relative compute speed (null: 1 each).</param>
/// <param name="Link">The link between every two servers.</param>
/// <param name="Latency">How requests arrive and decode, for the latency model.</param>
public sealed record SimulationSpec(
    IReadOnlyList<string> Domains, double MemoryShare, IReadOnlyList<double>? MemoryMb, IReadOnlyList<double>? Speeds, LinkSpec Link, LatencyOptions Latency);

/// <summary>
/// Placement algorithms computed from history routing traces (DeepSeek-V2-Lite's shape) and judged on other requests:
/// <c>dancemoe placement simulate</c>; <see cref="Synthetic"/> makes the seeded instances of <c>placement bench</c>.
/// </summary>
public sealed class PlacementSimulation
{
    private PlacementSimulation(PlacementProblem problem, Workload eval, IReadOnlyList<long> budgets, LinkSpec link, string description)
    {
        Problem = problem;
        Link = link;
        Eval = eval;
        Budgets = budgets;
        Description = description;
    }

    /// <summary>The model, the cluster and the history's activation counts the algorithms place from.</summary>
    public PlacementProblem Problem { get; }

    /// <summary>The requests the placements are judged on.</summary>
    public Workload Eval { get; }

    /// <summary>Each server's memory budget in bytes.</summary>
    public IReadOnlyList<long> Budgets { get; }

    /// <summary>The link between every two servers.</summary>
    public LinkSpec Link { get; }

    /// <summary>One line on the instance: its workloads, budgets and link.</summary>
    public string Description { get; }

    /// <summary>Loads the traces of <paramref name="historyDir"/> (and <paramref name="evalDir"/>: default, the second half of the history).</summary>
    public static PlacementSimulation FromTraces(string historyDir, string? evalDir, SimulationSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var model = MoeModel.DeepSeekV2Lite;
        if (spec.Domains.GroupBy(d => d, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } twice)
        {
            throw new OperationException($"server '{twice.Key}' is listed twice: one server per workload domain", OperationFailure.InvalidSettings);
        }

        // A server's name is the start of its trace files' names, never a path out of the trace directory.
        if (spec.Domains.FirstOrDefault(d => d.Trim('.').Length == 0 || !d.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')) is { } bad)
        {
            throw new OperationException(
                $"server '{bad}' is not a domain name (letters, digits, '-', '_' and '.', as in DOMAIN.layer01.txt)", OperationFailure.InvalidSettings);
        }

        var budgets = spec.MemoryMb is null
            ? Enumerable.Repeat((long)(spec.MemoryShare * model.TotalExpertBytes), spec.Domains.Count).ToArray()
            : spec.MemoryMb.Select(mb => (long)(mb * 1e6)).ToArray();
        EnsureRoom(model, budgets);
        var requests = Load("--history", historyDir, spec.Domains, model);
        Workload history;
        Workload eval;
        if (evalDir is null)
        {
            (history, eval) = Workload.SplitHalves(requests);
        }
        else
        {
            history = new Workload(requests);
            eval = new Workload(Load("--eval", evalDir, spec.Domains, model));
        }

        if (history.Requests.Count == 0 || eval.Requests.Count == 0)
        {
            throw new OperationException(evalDir is null
                ? $"{historyDir}: {requests.Count} sequence(s) split into each server's first half (to place from) and second half (to judge on) leave "
                    + $"{(history.Requests.Count == 0 ? "no history" : "nothing to judge on")}; give more sequences, or --eval DIR"
                : $"{(history.Requests.Count == 0 ? historyDir : evalDir)}: the traces hold no sequence", OperationFailure.InvalidSettings);
        }

        // One server short of requests would be placed for without its own workload, or judged on nothing, without a word.
        for (var server = 0; server < spec.Domains.Count; server++)
        {
            var inHistory = history.Requests.Count(r => r.Server == server);
            var inEval = eval.Requests.Count(r => r.Server == server);
            if (inHistory == 0 || inEval == 0)
            {
                throw new OperationException(evalDir is null
                    ? $"{historyDir}: server '{spec.Domains[server]}' has {inHistory + inEval} sequence(s): split into its first half (to place from) and second half "
                        + $"(to judge on) they leave {(inHistory == 0 ? "no history" : "nothing to judge on")}; give more sequences, or --eval DIR"
                    : $"{(inHistory == 0 ? historyDir : evalDir)}: the traces of server '{spec.Domains[server]}' hold no sequence", OperationFailure.InvalidSettings);
            }
        }

        var servers = spec.Domains.Select((d, i) => ServerSpec.Edge(d, budgets[i], spec.Speeds?[i] ?? 1.0)).ToList();
        var problem = new PlacementProblem(model, Cluster.FullMesh(servers, spec.Link), ActivationCounts.FromWorkload(servers.Count, model, history))
        {
            History = history,
            Latency = spec.Latency,
        };
        var link = spec.Link;
        var description = $"history {history.Requests.Count} requests / {history.Tokens} tokens, eval {eval.Requests.Count} requests / {eval.Tokens} tokens; "
            + $"budgets {string.Join(",", budgets.Select(b => (b / 1e6).ToString("F0", CultureInfo.InvariantCulture)))} MB; link {link.BytesPerSecond * 8 / 1e6:F0} Mbps, RTT {link.RttSeconds * 1e3:F1} ms";
        return new PlacementSimulation(problem, eval, budgets, spec.Link, description);
    }

    /// <summary>How many routing choices a synthetic instance may hold in memory.</summary>
    public const long MaxSyntheticChoices = 200_000_000;

    /// <summary>How many (server, layer, expert) cells a synthetic instance may have: its arrays of that size take about 18 bytes a cell.</summary>
    public const long MaxSyntheticCells = 100_000_000;

    /// <summary>A seeded synthetic instance: <paramref name="requests"/> requests of history and as many to judge on.</summary>
    public static PlacementSimulation Synthetic(
        int serverCount, int layers, int experts, int topK, double memory, int requests, int tokens, CancellationToken cancellationToken = default)
    {
        if (topK > experts)
        {
            throw new InvalidSettingsException($"--top-k must be between 1 and {experts} (got '{topK}')");
        }

        var choices = (long)serverCount * 2 * requests * tokens * layers * topK;
        if (choices > MaxSyntheticChoices)
        {
            // Every routing choice is generated and held before any solve starts.
            throw new OperationException(string.Create(CultureInfo.InvariantCulture,
                $"the instance would route {choices:N0} expert choices (servers x 2 x requests x tokens x layers x top-k); at most {MaxSyntheticChoices:N0} are generated"),
                OperationFailure.InvalidSettings);
        }

        var cells = (long)serverCount * layers * experts;
        if (cells > MaxSyntheticCells)
        {
            throw new OperationException(string.Create(CultureInfo.InvariantCulture,
                $"the instance would have {cells:N0} servers x layers x experts; at most {MaxSyntheticCells:N0} fit in memory"),
                OperationFailure.InvalidSettings);
        }

        var model = MoeModel.Uniform(layers, experts, topK, MoeModel.DeepSeekV2Lite.ExpertBytes[0], MoeModel.DeepSeekV2Lite.HiddenBytes);
        var budget = (long)(memory * model.TotalExpertBytes);
        EnsureRoom(model, Enumerable.Repeat(budget, serverCount));
        var link = LinkSpec.FromMbps(500, 2);
        var cluster = Cluster.FullMesh(Enumerable.Range(0, serverCount).Select(i => ServerSpec.Edge($"s{i}", budget)).ToList(), link);
        var clock = Stopwatch.StartNew();
        var all = SyntheticWorkload.Generate(7, serverCount, model, 2 * requests, tokens, cancellationToken: cancellationToken);
        var (history, eval) = Workload.SplitHalves(all.Requests);
        var problem = new PlacementProblem(model, cluster, ActivationCounts.FromWorkload(serverCount, model, history)) { History = history };
        var description = $"bench: {serverCount} servers x {layers} layers x {experts} experts (top-{topK}), memory {memory:P0}, "
            + $"{history.Tokens} history tokens, generated in {clock.ElapsedMilliseconds} ms";
        return new PlacementSimulation(problem, eval, Enumerable.Repeat(budget, serverCount).ToArray(), link, description);
    }

    /// <summary>Runs every algorithm on the problem and judges its placement on <see cref="Eval"/>.</summary>
    public IReadOnlyList<AlgorithmResult> Solve(IReadOnlyList<IPlacementAlgorithm> algorithms, CancellationToken cancellationToken)
    {
        try
        {
            return Simulation.Run(Problem, Eval, algorithms, cancellationToken);
        }
        catch (InfeasiblePlacementException ex)
        {
            throw new OperationException($"infeasible: {ex.Message}");
        }
    }

    /// <summary>A lower bound on the mean latency any placement within the budgets models on <see cref="Eval"/> (<see cref="LatencyLowerBound"/>).</summary>
    public double? LowerBoundMs(CancellationToken cancellationToken) => LatencyLowerBound.MeanLatencyMs(Problem, Eval, cancellationToken);

    /// <summary>Plans the migration from <paramref name="from"/>'s placement to each result's, and whether it pays within <paramref name="horizon"/> s.</summary>
    public Dictionary<string, (MigrationPlan Plan, MigrationDecision Decision)> Migrations(IReadOnlyList<AlgorithmResult> results, string from, double horizon)
    {
        ArgumentNullException.ThrowIfNull(results);
        var source = results.First(r => r.Algorithm == from);
        var rate = Problem.Cluster.Count / Problem.Latency.RequestIntervalSeconds;
        var migrations = new Dictionary<string, (MigrationPlan, MigrationDecision)>(StringComparer.Ordinal);
        foreach (var target in results)
        {
            MigrationPlan plan;
            try
            {
                plan = MigrationPlanner.Plan(source.Placement, target.Placement, Problem.Model, Problem.Cluster);
            }
            catch (InvalidOperationException ex)
            {
                throw new OperationException($"migration {from} -> {target.Algorithm}: {ex.Message}");
            }

            var decision = MigrationPlanner.Decide(source.Metrics.LatencyMsMean / 1e3, target.Metrics.LatencyMsMean / 1e3, rate, horizon, plan);
            migrations[target.Algorithm] = (plan, decision);
        }

        return migrations;
    }

    /// <summary>Draws <paramref name="results"/> to a PNG, titled with the domains, memory share and link.</summary>
    public void Plot(string path, IReadOnlyList<AlgorithmResult> results)
    {
        var link = Link;
        var title = string.Create(CultureInfo.InvariantCulture,
            $"{string.Join(",", Problem.Cluster.Servers.Select(s => s.Name))}: {Budgets.Average() / Problem.Model.TotalExpertBytes:P0} memory, {link.BytesPerSecond * 8 / 1e6:F0} mbps, rtt {link.RttSeconds * 1e3:F1} ms");
        try
        {
            PlacementPlot.Save(path, title, results);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new OperationException($"cannot write {path}: {ex.Message}");
        }
    }

    /// <summary>Budgets too small for every expert are a setting to change, told before the traces are read or the instance generated.</summary>
    private static void EnsureRoom(MoeModel model, IEnumerable<long> budgets)
    {
        try
        {
            PlacementProblem.EnsureRoom(model, budgets);
        }
        catch (InfeasiblePlacementException ex)
        {
            throw new InvalidSettingsException($"infeasible: {ex.Message}");
        }
    }

    /// <summary>The traces of <paramref name="directory"/>, given as <paramref name="option"/>: one not there or not a trace is bad input (exit code 2).</summary>
    private static List<TraceRequest> Load(string option, string directory, IReadOnlyList<string> domains, MoeModel model)
    {
        if (!Directory.Exists(directory))
        {
            throw new OperationException($"{option}: no trace directory {directory}", OperationFailure.InvalidSettings);
        }

        var requests = new List<TraceRequest>();
        for (var server = 0; server < domains.Count; server++)
        {
            var layers = new List<IReadOnlyList<int[]>>();
            for (var l = 1; l <= model.Layers; l++)
            {
                var path = Path.Combine(directory, string.Create(CultureInfo.InvariantCulture, $"{domains[server]}.layer{l:D2}.txt"));
                bool exists;
                try
                {
                    // A FIFO would block the open until a writer came; a directory or a dangling link is no trace file.
                    exists = ModelFiles.RegularFileExists(path);
                }
                catch (ModelFormatException ex)
                {
                    throw new OperationException($"{option}: {ex.Message}", OperationFailure.InvalidSettings, ex);
                }

                if (!exists)
                {
                    throw new OperationException($"{option}: missing trace file {path}", OperationFailure.InvalidSettings);
                }

                try
                {
                    using var stream = File.OpenRead(path);
                    layers.Add(TraceReader.ReadLayer(stream, model.TopK, model.Experts));
                }
                catch (FormatException ex)
                {
                    throw new OperationException($"{path}: {ex.Message}", OperationFailure.InvalidSettings, ex);
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    throw new OperationException($"{path}: {ex.Message}", OperationFailure.Failed, ex);
                }
            }

            try
            {
                requests.AddRange(TraceReader.Join(server, layers, model.TopK));
            }
            catch (FormatException ex)
            {
                throw new OperationException($"{Path.Combine(directory, domains[server])}.layer*.txt: {ex.Message}", OperationFailure.InvalidSettings, ex);
            }
        }

        return requests;
    }
}
