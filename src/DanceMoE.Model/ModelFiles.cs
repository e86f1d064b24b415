using System.Text;
using Microsoft.Win32.SafeHandles;

namespace DanceMoE.Model;

/// <summary>
/// Opens and reads of a model's files: a dangling or looping link, or a file it may not read, fails naming the file, and
/// reads of its JSON files (manifest, config, index, tokenizer) stop at a size no such file reaches.
/// </summary>
public static class ModelFiles
{
    /// <summary>Far above real ones: a DeepSeek or Qwen tokenizer.json is under 10 MiB, a manifest of thousands of experts a few MiB.</summary>
    public const int MaxJsonBytes = 64 * 1024 * 1024;

    /// <summary>The file's text; counts what it reads, as a device such as /dev/zero reports no length and never ends.</summary>
    public static string ReadJson(string path)
    {
        using var stream = new FileStream(Open(path), FileAccess.Read);
        var bytes = ReadAtMost(stream, MaxJsonBytes);
        if (bytes.Length > MaxJsonBytes)
        {
            throw new ModelFormatException($"{path}: larger than {MaxJsonBytes / (1024 * 1024)} MiB, too large for a model's JSON file");
        }

        var text = Encoding.UTF8.GetString(bytes);
        return text.StartsWith('\uFEFF') ? text[1..] : text;
    }

    /// <summary>The stream's bytes up to a little past <paramref name="maxBytes"/>: more than that many means it is longer.</summary>
    public static byte[] ReadAtMost(Stream stream, int maxBytes)
    {
        ArgumentNullException.ThrowIfNull(stream);
        using var bytes = new MemoryStream();
        var buffer = new byte[64 * 1024];
        int read;
        while (bytes.Length <= maxBytes && (read = stream.Read(buffer)) > 0)
        {
            bytes.Write(buffer, 0, read);
        }

        return bytes.ToArray();
    }

    /// <summary>A name that stays in its directory: not empty, no directory part, not ".", ".." or hidden.</summary>
    public static bool IsPlainFileName(string name) =>
        name.Length > 0 && !name.Contains('/', StringComparison.Ordinal) && !name.Contains('\\', StringComparison.Ordinal) && !name.StartsWith('.');

    public static SafeFileHandle Open(string path)
    {
        try
        {
            return File.OpenHandle(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new ModelFormatException($"{path}: cannot be opened ({ex.Message})", ex);
        }
    }
}
