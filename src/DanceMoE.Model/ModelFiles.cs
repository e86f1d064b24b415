using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Win32.SafeHandles;

namespace DanceMoE.Model;

/// <summary>
/// Opens and reads of a model's files: anything but a regular file (a FIFO, a device, a dangling or looping link), or a
/// file it may not read, fails naming the file, and reads of its JSON files (manifest, config, index, tokenizer) stop at a
/// size no such file reaches.
/// </summary>
public static class ModelFiles
{
    /// <summary>Far above real ones: a DeepSeek or Qwen tokenizer.json is under 10 MiB, a manifest of thousands of experts a few MiB.</summary>
    public const int MaxJsonBytes = 64 * 1024 * 1024;

    /// <summary>The file's text; counts what it reads, as a device such as /dev/zero reports no length and never ends.</summary>
    public static string ReadJson(string path) => ReadText(path, MaxJsonBytes, "a model's JSON file");

    /// <summary>
    /// The text of a small file, its byte order mark removed: a missing file is a <see cref="FileNotFoundException"/>;
    /// anything but a regular file, one longer than <paramref name="maxBytes"/> (named in the message as <paramref name="kind"/>)
    /// or one that is not UTF-8 is a <see cref="ModelFormatException"/> naming the file. Decoding bad bytes to U+FFFD
    /// would silently read something other than what the file says.
    /// </summary>
    public static string ReadText(string path, int maxBytes, string kind)
    {
        using var stream = new FileStream(Open(path), FileAccess.Read);
        var bytes = ReadAtMost(stream, maxBytes);
        if (bytes.Length > maxBytes)
        {
            var size = maxBytes % (1024 * 1024) == 0 ? $"{maxBytes / (1024 * 1024)} MiB" : $"{maxBytes} bytes";
            throw new ModelFormatException($"{path}: larger than {size}, too large for {kind}");
        }

        string text;
        try
        {
            text = StrictUtf8.GetString(bytes);
        }
        catch (DecoderFallbackException ex)
        {
            throw new ModelFormatException($"{path}: not UTF-8 text", ex);
        }

        return text.StartsWith('\uFEFF') ? text[1..] : text;
    }

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>
    /// A model's JSON text parsed with a key given twice refused as a <see cref="JsonException"/>: by default JsonNode finds
    /// the duplicate only when the object is first read, as an ArgumentException that no handler of a bad file expects.
    /// </summary>
    public static JsonNode? ParseJson(string text) => JsonNode.Parse(text, documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false });

    /// <inheritdoc cref="ParseJson(string)"/>
    public static JsonNode? ParseJson(ReadOnlySpan<byte> utf8) => JsonNode.Parse(utf8, documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false });

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
        if (!RegularFileExists(path))
        {
            throw new FileNotFoundException($"{path}: file not found", path);
        }

        try
        {
            return File.OpenHandle(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new ModelFormatException($"{path}: cannot be opened ({ex.Message})", ex);
        }
    }

    /// <summary>
    /// True when <paramref name="path"/> is a regular file once links are followed, false when nothing is there (for the
    /// caller to report as it does); throws when something else is: opening a FIFO blocks until a writer comes, which may
    /// be never, a directory is no file, and a dangling link handed to ONNX Runtime fails only deep inside its open.
    /// </summary>
    public static bool RegularFileExists(string path)
    {
        // Only statx(2) tells a FIFO from a file (.NET reports neither); its layout is the same on every Linux
        // architecture. Elsewhere, or on a libc without it, the open reports what it finds.
        if (!OperatingSystem.IsLinux() || s_statxMissing)
        {
            return File.Exists(path);
        }

        var status = new byte[StatxBytes];
        int result;
        try
        {
            result = Statx(AtCurrentDirectory, path, 0, StatxType, status);
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            s_statxMissing = true;
            return File.Exists(path);
        }

        if (result == 0)
        {
            return (BitConverter.ToUInt16(status, StatxModeOffset) & FileTypeMask) switch
            {
                RegularFileType => true,
                DirectoryType => throw new ModelFormatException($"{path} is a directory, not a file"),
                _ => throw new ModelFormatException($"{path} is not a regular file"),
            };
        }

        var error = Marshal.GetLastPInvokeError();
        var isLink = new FileInfo(path).LinkTarget is not null;
        switch (error)
        {
            case NoSuchEntry when isLink:
                throw new ModelFormatException($"{path} is a link to a missing file");
            case TooManyLinks when isLink:
                throw new ModelFormatException($"{path} is a link that loops back on itself");
            default:
                return File.Exists(path);
        }
    }

    private const int AtCurrentDirectory = -100;
    private const uint StatxType = 0x1;
    private const int StatxBytes = 256;
    private const int StatxModeOffset = 28;
    private const int FileTypeMask = 0xF000;
    private const int RegularFileType = 0x8000;
    private const int DirectoryType = 0x4000;
    private const int NoSuchEntry = 2;
    private const int TooManyLinks = 40;

    private static volatile bool s_statxMissing;

    [DllImport("libc", EntryPoint = "statx", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int Statx(int directory, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, uint mask, byte[] status);
}
