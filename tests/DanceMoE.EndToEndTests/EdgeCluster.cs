using System.Globalization;
using DanceMoE.Contracts;
using DanceMoE.Edge;
using DanceMoE.Hosting;
using DanceMoE.Inference;
using DanceMoE.IntegrationTests;
using DanceMoE.Model;
using DanceMoE.Model.Onnx;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;

namespace DanceMoE.EndToEndTests;

/// <summary>
/// A tiny exported model, an isolated RabbitMQ virtual host, and real edge processes
/// (<c>dotnet dancemoe.dll edge ...</c>) started on it; plus a bus client to talk to them.
/// </summary>
public sealed class EdgeCluster : IAsyncDisposable
{
    private readonly List<(string Id, CliProcess Process)> _edges = [];
    private readonly Dictionary<string, (string PlacementFile, int DeadlineMs, int MemoryMb, string? TraceDatabase, string[] ExtraArguments)> _startedWith = [];
    private ServiceProvider? _provider;
    private RequestChannel? _requests;

    private EdgeCluster(string directory, IsolatedVirtualHost vhost, ModelManifest manifest)
    {
        Directory = directory;
        VirtualHost = vhost;
        Manifest = manifest;
    }

    public string Directory { get; }

    public IsolatedVirtualHost VirtualHost { get; }

    public ModelManifest Manifest { get; }

    public string ModelDirectory => Manifest.Directory;

    /// <summary>The user the edges take control messages from: the test's own, which the test and its coordinator send with.</summary>
    public string CoordinatorUser { get; set; } = RabbitMqOptions.Parse(TestServices.RabbitMqUri).Username;

    public IBusControl Bus => _provider!.GetRequiredService<IBusControl>();

    /// <summary>Requests through a response endpoint of their own on <see cref="Bus"/>, as the product's front ends send them.</summary>
    public RequestChannel Requests => _requests ?? throw new InvalidOperationException("the cluster's bus has not started");

    public static async Task<EdgeCluster> CreateAsync(ulong seed = 11, TinyOptions? model = null, ExpertWeightFormat expertWeights = ExpertWeightFormat.Fp32)
    {
        var directory = Path.Combine(Path.GetTempPath(), "dancemoe-e2e-" + Guid.NewGuid().ToString("N")[..8]);
        TinyCheckpoint.Write(Path.Combine(directory, "ckpt"), model ?? new TinyOptions { Seed = seed });
        var manifest = OnnxExporter.Export(Checkpoint.Open(Path.Combine(directory, "ckpt")), Path.Combine(directory, "onnx"), TensorDtype.F32, expertWeights: expertWeights);
        var vhost = new IsolatedVirtualHost();
        await vhost.InitializeAsync();
        var cluster = new EdgeCluster(directory, vhost, ModelManifest.Load(Path.Combine(directory, "onnx")));
        cluster._provider = new ServiceCollection()
            .AddMassTransit(bus => bus.UsingRabbitMq((_, cfg) =>
            {
                new RabbitMqOptions { ConnectionString = vhost.Uri }.ConfigureHost(cfg);
                cfg.AddDeserializer(ExpertBatchSerializer.Instance);
            }))
            .BuildServiceProvider(true);
        await cluster.Bus.StartAsync();
        cluster._requests = new RequestChannel(cluster.Bus);
        return cluster;
    }

    public string WritePlacement(string name, EdgePlacement placement)
    {
        var path = Path.Combine(Directory, name);
        PlacementFile.Save(path, placement);
        return path;
    }

    /// <summary>Starts the edges and waits until each consumes its queues; with a database, they record traces there.</summary>
    public async Task StartEdgesAsync(
        IEnumerable<string> ids, string placementFile, int deadlineMs = 5000, int memoryMb = 256, string? traceDatabase = null, params string[] extraArguments)
    {
        var started = new List<(string Id, CliProcess Process)>();
        foreach (var id in ids)
        {
            _startedWith[id] = (placementFile, deadlineMs, memoryMb, traceDatabase, extraArguments);
            string[] arguments =
            [
                "edge", "--id", id, "--model", ModelDirectory, "--memory-mb", memoryMb.ToString(CultureInfo.InvariantCulture),
                "--placement", placementFile, "--provider", "cpu", "--deadline-ms", deadlineMs.ToString(CultureInfo.InvariantCulture),
                "--trace-spill-dir", Path.Combine(Directory, "spill"), .. extraArguments,
                .. extraArguments.Contains("--heartbeat-seconds") ? Array.Empty<string>() : ["--heartbeat-seconds", "1"],
                .. traceDatabase is null ? ["--no-traces"] : Array.Empty<string>(),
            ];
            var environment = new Dictionary<string, string>
            {
                ["ConnectionStrings__rabbitmq"] = VirtualHost.Uri,
                ["Edge__CoordinatorUser"] = CoordinatorUser,
            };
            if (traceDatabase is not null)
            {
                environment["ConnectionStrings__postgres"] = traceDatabase;
            }

            var process = CliProcess.Start(arguments, environment, Path.Combine(Directory, id + ".log"), Path.Combine(Directory, id + ".ready"));
            _edges.Add((id, process));
            started.Add((id, process));
        }

        var deadline = DateTime.UtcNow.AddSeconds(90);
        foreach (var (id, process) in started)
        {
            await process.WaitUntilReadyAsync(id, deadline);
        }
    }

    /// <summary>The CLI's environment on this cluster's broker virtual host, with a state folder (pid files, logs) of its own.</summary>
    public Dictionary<string, string> CliEnvironment() => new()
    {
        ["DANCEMOE_STATE"] = Path.Combine(Directory, "state"),
        ["ConnectionStrings__rabbitmq"] = VirtualHost.Uri,
    };

    public string LogOf(string id) => _edges.Single(e => e.Id == id).Process.Log();

    /// <summary>Waits up to 20 s until the edge's log holds the text; fails the test with the log otherwise.</summary>
    public async Task LogUntilAsync(string id, string text)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (!LogOf(id).Contains(text, StringComparison.Ordinal))
        {
            Assert.True(DateTime.UtcNow < deadline, $"{id} did not log '{text}' in 20 s; its log:\n{LogOf(id)}");
            await Task.Delay(50);
        }
    }

    public void Kill(string id) => _edges.Single(e => e.Id == id).Process.Process.Kill(entireProcessTree: true);

    /// <summary>Stops the edge as <c>cluster down</c> does (SIGTERM) and waits up to 30 s for it to exit.</summary>
    public async Task TerminateAsync(string id)
    {
        var process = _edges.Single(e => e.Id == id).Process.Process;
        Operations.LocalCluster.Signal("TERM", process.Id);
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
    }

    /// <summary>Starts a killed edge again with the arguments it was started with; its queues keep what was not acknowledged.</summary>
    public async Task RestartAsync(string id)
    {
        var old = _edges.Single(e => e.Id == id);
        await old.Process.DisposeAsync();
        _edges.Remove(old);
        var (placementFile, deadlineMs, memoryMb, traceDatabase, extraArguments) = _startedWith[id];
        await StartEdgesAsync([id], placementFile, deadlineMs, memoryMb, traceDatabase, extraArguments);
    }

    public async Task<TextGenerated> GenerateAsync(string edge, string prompt, int maxTokens, TimeSpan? timeout = null)
    {
        var client = Bus.CreateRequestClient<GenerateText>(EdgeQueues.RequestsAddress(edge), RequestTimeout.After(s: (int)(timeout ?? TimeSpan.FromSeconds(60)).TotalSeconds));
        var response = await client.GetResponse<TextGenerated>(new GenerateText { RequestId = NewId.NextGuid(), Prompt = prompt, MaxNewTokens = maxTokens });
        return response.Message;
    }

    /// <summary>The oracle: the same model, every expert local, no bus.</summary>
    public async Task<IReadOnlyList<int>> MonolithicAsync(string prompt, int maxTokens)
    {
        var factory = new SessionFactory(new InferenceOptions { Provider = ExecutionProvider.Cpu });
        using var pool = new ExpertSessionPool(Manifest, factory);
        using var forward = new MoeForward(Manifest, factory, new LocalExpertDispatcher(pool));
        var tokenizer = new ByteTokenizer(Manifest.Tokenizer!.BosTokenId, Manifest.Tokenizer.EosTokenId);
        var result = await Generator.GenerateAsync(forward, tokenizer, tokenizer.Encode(prompt), maxTokens, new SamplingOptions(), new ForwardContext(), CancellationToken.None);
        return result.TokenIds;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var (_, process) in _edges)
        {
            await process.DisposeAsync();
        }

        if (_requests is not null)
        {
            await _requests.DisposeAsync();
        }

        if (_provider is not null)
        {
            await Bus.StopAsync();
            await _provider.DisposeAsync();
        }

        await VirtualHost.DisposeAsync();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
            // A log still open by a dying process: the temp folder is cleaned by the OS.
        }
    }
}
