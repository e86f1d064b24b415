using System.Text.Json;
using DanceMoE.Contracts;
using DanceMoE.Model;

namespace DanceMoE.Edge;

/// <summary>
/// A placement as a JSON file: <c>{"version": 1, "assignments": [{"layer": 0, "expert": 3, "servers": ["edge-1"]}, ...]}</c>.
/// The bootstrap placement source; the coordinator's <see cref="PlacementActivated"/> events replace it.
/// </summary>
public static class PlacementFile
{
    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
    };

    /// <summary>Far above real ones: every expert of a 60-layer model of 256 experts on a dozen edges is a few MiB.</summary>
    public const int MaxBytes = 64 * 1024 * 1024;

    public static EdgePlacement Load(string path)
    {
        string text;
        try
        {
            text = ModelFiles.ReadText(path, MaxBytes, "a placement file");
        }
        catch (FileNotFoundException ex)
        {
            throw new PlacementException($"{path}: placement file not found", ex);
        }
        catch (ModelFormatException ex)
        {
            throw new PlacementException(ex.Message, ex);
        }
        catch (IOException ex)
        {
            throw new PlacementException($"{path}: cannot read the placement file ({ex.Message})", ex);
        }

        PlacementDocument? document;
        try
        {
            document = JsonSerializer.Deserialize<PlacementDocument>(text, Json);
        }
        catch (JsonException ex)
        {
            throw new PlacementException($"{path}: not a placement file ({ex.Message})", ex);
        }

        if (document?.Assignments is null)
        {
            throw new PlacementException($"{path}: no \"assignments\" list");
        }

        try
        {
            return new EdgePlacement(document.Version, document.Assignments);
        }
        catch (PlacementException ex)
        {
            throw new PlacementException($"{path}: {ex.Message}", ex);
        }
    }

    /// <summary>The placement of <paramref name="path"/>, checked against a model of <paramref name="layers"/> x <paramref name="experts"/>; every failure names the file.</summary>
    public static EdgePlacement Load(string path, int layers, int experts)
    {
        var placement = Load(path);
        try
        {
            placement.Validate(layers, experts);
        }
        catch (PlacementException ex)
        {
            throw new PlacementException($"{path}: {ex.Message}", ex);
        }

        return placement;
    }

    public static void Save(string path, EdgePlacement placement)
    {
        ArgumentNullException.ThrowIfNull(placement);
        var document = new PlacementDocument { Version = placement.Version, Assignments = [.. placement.Assignments] };
        File.WriteAllText(path, JsonSerializer.Serialize(document, Json));
    }

    /// <summary>Every expert once, spread round-robin over the servers: expert parallelism's default.</summary>
    public static EdgePlacement Uniform(int version, int layers, int experts, IReadOnlyList<string> servers)
    {
        ArgumentNullException.ThrowIfNull(servers);
        if (servers.Count == 0)
        {
            throw new PlacementException("a uniform placement needs at least one server");
        }

        var assignments = new List<ExpertAssignment>(layers * experts);
        for (var l = 0; l < layers; l++)
        {
            for (var e = 0; e < experts; e++)
            {
                assignments.Add(new ExpertAssignment { Layer = l, Expert = e, Servers = [servers[((l * experts) + e) % servers.Count]] });
            }
        }

        return new EdgePlacement(version, assignments);
    }

    private sealed class PlacementDocument
    {
        public int Version { get; set; }

        public List<ExpertAssignment>? Assignments { get; set; }
    }
}

public sealed class PlacementException(string message, Exception? inner = null) : Exception(message, inner);
