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

    public static EdgePlacement Load(string path)
    {
        bool exists;
        try
        {
            exists = ModelFiles.RegularFileExists(path);
        }
        catch (ModelFormatException ex)
        {
            throw new PlacementException(ex.Message, ex);
        }

        if (!exists)
        {
            throw new PlacementException($"{path}: placement file not found");
        }

        PlacementDocument? document;
        try
        {
            document = JsonSerializer.Deserialize<PlacementDocument>(File.ReadAllText(path), Json);
        }
        catch (JsonException ex)
        {
            throw new PlacementException($"{path}: not a placement file ({ex.Message})", ex);
        }

        if (document?.Assignments is null)
        {
            throw new PlacementException($"{path}: no \"assignments\" list");
        }

        return new EdgePlacement(document.Version, document.Assignments);
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
