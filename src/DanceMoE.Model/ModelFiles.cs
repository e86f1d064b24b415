using System.Text;

namespace DanceMoE.Model;

/// <summary>Reads of a model's JSON files (manifest, config, index, tokenizer) that stop at a size no such file reaches.</summary>
public static class ModelFiles
{
    /// <summary>Far above real ones: a DeepSeek or Qwen tokenizer.json is under 10 MiB, a manifest of thousands of experts a few MiB.</summary>
    public const int MaxJsonBytes = 64 * 1024 * 1024;

    /// <summary>The file's text; counts what it reads, as a device such as /dev/zero reports no length and never ends.</summary>
    public static string ReadJson(string path)
    {
        using var stream = File.OpenRead(path);
        using var bytes = new MemoryStream();
        var buffer = new byte[64 * 1024];
        int read;
        while ((read = stream.Read(buffer)) > 0)
        {
            if (bytes.Length + read > MaxJsonBytes)
            {
                throw new ModelFormatException($"{path}: larger than {MaxJsonBytes / (1024 * 1024)} MiB, too large for a model's JSON file");
            }

            bytes.Write(buffer, 0, read);
        }

        var text = Encoding.UTF8.GetString(bytes.GetBuffer(), 0, (int)bytes.Length);
        return text.StartsWith('\uFEFF') ? text[1..] : text;
    }
}
