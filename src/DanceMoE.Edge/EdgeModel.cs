using DanceMoE.Inference;
using DanceMoE.Model;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DanceMoE.Edge;

/// <summary>
/// The exported model an edge serves, read once at start: its manifest, the factory of its ONNX sessions, its tokenizer
/// and the bootstrap placement (the edge's file, a uniform spread, or every expert here), checked against the model.
/// </summary>
public sealed class EdgeModel
{
    public EdgeModel(IOptions<EdgeOptions> options, ILogger<EdgeModel> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        var edge = options.Value;
        Manifest = ModelManifest.Load(edge.ModelDirectory);
        var architecture = Manifest.Architecture;
        Placement = edge.PlacementFile switch
        {
            null => PlacementFile.Uniform(0, architecture.RoutedLayers, architecture.NumExperts, [edge.Id]),
            "uniform" => PlacementFile.Uniform(1, architecture.RoutedLayers, architecture.NumExperts,
                edge.UniformEdges() ?? throw new PlacementException("a uniform placement needs the list of edges to spread over")),
            var file => PlacementFile.Load(file, architecture.RoutedLayers, architecture.NumExperts),
        };
        Placement.Validate(architecture.RoutedLayers, architecture.NumExperts);
        Sessions = new SessionFactory(
            new InferenceOptions
            {
                Provider = InferenceOptions.ParseProvider(edge.Provider),
                IntraOpThreads = edge.IntraOpThreads,
                InterOpThreads = 1,
                // The dense weights once: the steps where the scheduler batches, the one graph where it runs one at a time.
                DenseGraphs = edge.MaxActive > 1 ? DenseGraphs.Steps : DenseGraphs.OneGraph,
            },
            message => logger.LogWarning("{Edge}: {Message}", edge.Id, message));
        Tokenizer = Manifest.Tokenizer is { } t ? new ByteTokenizer(t.BosTokenId, t.EosTokenId) : ByteTokenizer.Default;
    }

    public ModelManifest Manifest { get; }

    public SessionFactory Sessions { get; }

    public ByteTokenizer Tokenizer { get; }

    /// <summary>The placement the edge starts from, until the coordinator activates a newer one.</summary>
    public EdgePlacement Placement { get; }
}
