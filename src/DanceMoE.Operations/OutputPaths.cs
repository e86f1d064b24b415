namespace DanceMoE.Operations;

/// <summary>
/// Refuses an output path nothing could be written at before the work whose result it holds, which takes seconds to
/// minutes (a simulation's solves, a model's export) and would otherwise end in the error.
/// </summary>
public static class OutputPaths
{
    /// <summary>A file to write (<c>--plot</c>): not a directory, and in a folder that exists; null (none asked for) passes.</summary>
    public static void CheckFile(string option, string? path)
    {
        if (path is null)
        {
            return;
        }

        if (Directory.Exists(path))
        {
            throw new InvalidSettingsException($"{option} {path} is a directory, not a file");
        }

        if (Path.GetDirectoryName(Path.GetFullPath(path)) is { } folder && !Directory.Exists(folder))
        {
            throw new InvalidSettingsException($"{option} {path}: no folder {folder} to write it in");
        }
    }

    /// <summary>
    /// A directory to write files into (<c>--out</c>): an existing one is written into and missing ones are created, so
    /// neither it nor any folder above it may be a file.
    /// </summary>
    public static void CheckDirectory(string option, string path)
    {
        if (File.Exists(path))
        {
            throw new InvalidSettingsException($"{option} {path} is a file, not a directory: remove it or choose another path");
        }

        for (var folder = Path.GetDirectoryName(Path.GetFullPath(path)); folder is not null && !Directory.Exists(folder); folder = Path.GetDirectoryName(folder))
        {
            if (File.Exists(folder))
            {
                throw new InvalidSettingsException($"{option} {path}: {folder} is a file, not a folder");
            }
        }
    }
}
