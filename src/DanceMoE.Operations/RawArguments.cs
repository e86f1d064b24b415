using System.Buffers;
using System.Globalization;
using System.Text.Unicode;

namespace DanceMoE.Operations;

/// <summary>
/// The process's arguments as the kernel holds them (<c>/proc/self/cmdline</c>). .NET decodes them as UTF-8 and puts
/// U+FFFD in place of bytes that are not, without a word: a prompt <c>$'\xff'</c> reached the byte tokenizer as the
/// three bytes EF BF BD.
/// </summary>
public static class RawArguments
{
    /// <summary>
    /// What is wrong with the first of the process's last <paramref name="count"/> arguments (the program's own, after the
    /// runtime's) that is not UTF-8 text, or null: all are, or the kernel's copy cannot be read.
    /// </summary>
    public static string? FirstNotUtf8(int count)
    {
        byte[] commandLine;
        try
        {
            commandLine = File.ReadAllBytes("/proc/self/cmdline");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            return null;
        }

        // Each argument ends with a NUL; an empty one is a NUL alone.
        var arguments = Split(commandLine.Length > 0 && commandLine[^1] == 0 ? commandLine.AsMemory(..^1) : commandLine);
        var first = Math.Max(0, arguments.Count - count);
        for (var i = first; i < arguments.Count; i++)
        {
            var bytes = arguments[i].Span;
            if (Utf8.ToUtf16(bytes, new char[bytes.Length], out var valid, out _, replaceInvalidSequences: false) == OperationStatus.InvalidData)
            {
                return string.Create(CultureInfo.InvariantCulture,
                    $"argument {i - first + 1} is not UTF-8 text (byte 0x{bytes[valid]:X2} at offset {valid}): prompts, paths and ids are read as UTF-8");
            }
        }

        return null;
    }

    private static List<ReadOnlyMemory<byte>> Split(ReadOnlyMemory<byte> commandLine)
    {
        var arguments = new List<ReadOnlyMemory<byte>>();
        var rest = commandLine;
        for (var end = rest.Span.IndexOf((byte)0); end >= 0; end = rest.Span.IndexOf((byte)0))
        {
            arguments.Add(rest[..end]);
            rest = rest[(end + 1)..];
        }

        arguments.Add(rest);
        return arguments;
    }
}
