using System.Runtime.InteropServices;

namespace DanceMoE.Edge;

/// <summary>
/// What an edge computes on, for the coordinator's <c>edge_servers.compute_class</c> when the operator does not say
/// (<c>--compute-class</c>): the GPU's model on CUDA, else the CPU's model and the cores this process may use.
/// </summary>
public static class ComputeClassProbe
{
    public const int MaxLength = 128;

    private const string NvidiaGpus = "/proc/driver/nvidia/gpus";

    public static string Describe(string executionProvider, int cores)
    {
        var described = executionProvider == "cuda"
            ? GpuModel(GpuInformation()) ?? "cuda"
            : $"cpu: {CpuModel(ReadOrNull("/proc/cpuinfo")) ?? RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant()} x {cores}";
        return Clean(described);
    }

    /// <summary>The first <c>model name</c> of <c>/proc/cpuinfo</c>'s text.</summary>
    public static string? CpuModel(string? cpuinfo) => Field(cpuinfo, "model name");

    /// <summary>The first <c>Model:</c> of the NVIDIA driver's per-GPU <c>information</c> files.</summary>
    public static string? GpuModel(IEnumerable<string> informationFiles) =>
        informationFiles.Select(text => Field(text, "Model")).FirstOrDefault(model => model is not null);

    /// <summary>One line of printable characters, at most <see cref="MaxLength"/>: what the coordinator accepts.</summary>
    public static string Clean(string text)
    {
        var printable = string.Join(' ', new string([.. text.Select(c => char.IsControl(c) ? ' ' : c)]).Split(' ', StringSplitOptions.RemoveEmptyEntries));
        return printable.Length <= MaxLength ? printable : printable[..MaxLength];
    }

    private static string? Field(string? text, string name)
    {
        foreach (var line in (text ?? "").Split('\n'))
        {
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon > 0 && line[..colon].Trim() == name && line[(colon + 1)..].Trim() is { Length: > 0 } value)
            {
                return value;
            }
        }

        return null;
    }

    private static IEnumerable<string> GpuInformation()
    {
        string[] gpus;
        try
        {
            gpus = Directory.Exists(NvidiaGpus) ? Directory.GetDirectories(NvidiaGpus) : [];
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            yield break;
        }

        foreach (var gpu in gpus.Order(StringComparer.Ordinal))
        {
            if (ReadOrNull(Path.Combine(gpu, "information")) is { } text)
            {
                yield return text;
            }
        }
    }

    private static string? ReadOrNull(string path)
    {
        try
        {
            return File.Exists(path) ? File.ReadAllText(path) : null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
