using System.Globalization;
using System.Text;

namespace DanceMoE.Placement;

/// <summary>
/// Reads routing traces: one file per (domain, layer); each line is one sequence,
/// "ids&lt;TAB&gt;&lt;TAB&gt;weights" (each list tab-separated), k ids per token.
/// </summary>
public static class TraceReader
{
    /// <summary>
    /// The longest line read, in characters: 50 times the longest of the DeepSeek-V2-Lite traces (82,306), about 16 MB
    /// of memory; a file of one endless line (/dev/zero) would otherwise be read until the process runs out of memory.
    /// </summary>
    public const int MaxLineChars = 4 << 20;

    /// <summary>Returns the expert ids of each line (sequence) of one layer file.</summary>
    public static IReadOnlyList<int[]> ReadLayer(TextReader reader, int topK, int experts)
    {
        ArgumentNullException.ThrowIfNull(reader);
        var sequences = new List<int[]>();
        var lineNumber = 0;
        var buffer = new StringBuilder();
        while (ReadLine(reader, buffer, lineNumber + 1) is { } line)
        {
            lineNumber++;
            if (line.Length == 0)
            {
                continue;
            }

            var split = line.IndexOf("\t\t", StringComparison.Ordinal);
            var idsPart = split < 0 ? line : line[..split];
            var ids = new List<int>();
            foreach (var range in idsPart.AsSpan().SplitAny(" \t"))
            {
                var token = idsPart.AsSpan()[range];
                if (token.IsEmpty)
                {
                    continue;
                }

                // int.TryParse skips trailing NULs, which only a damaged file holds.
                if (!int.TryParse(token, NumberStyles.None, CultureInfo.InvariantCulture, out var id) || id >= experts || token[^1] == '\0')
                {
                    throw new FormatException($"line {lineNumber}: {Quote(token)} is not an expert id below {experts}");
                }

                ids.Add(id);
            }

            if (ids.Count == 0 || ids.Count % topK != 0)
            {
                throw new FormatException($"line {lineNumber}: {ids.Count} ids is not a positive multiple of top-{topK}");
            }

            // A token's top-k are k different experts: one listed twice would count its activation twice.
            for (var start = 0; start < ids.Count; start += topK)
            {
                for (var i = start + 1; i < start + topK; i++)
                {
                    for (var j = start; j < i; j++)
                    {
                        if (ids[i] == ids[j])
                        {
                            throw new FormatException($"line {lineNumber}: token {(start / topK) + 1} lists expert {ids[i]} twice among its top-{topK}");
                        }
                    }
                }
            }

            sequences.Add([.. ids]);
        }

        return sequences;
    }

    /// <summary>The next line without its end (\n, \r\n or \r), or null at the end; at most <see cref="MaxLineChars"/> long.</summary>
    private static string? ReadLine(TextReader reader, StringBuilder buffer, int lineNumber)
    {
        buffer.Clear();
        int next;
        while ((next = reader.Read()) >= 0 && next != '\n')
        {
            if (next == '\r')
            {
                if (reader.Peek() == '\n')
                {
                    reader.Read();
                }

                break;
            }

            if (buffer.Length == MaxLineChars)
            {
                throw new FormatException(string.Create(CultureInfo.InvariantCulture, $"line {lineNumber} is longer than {MaxLineChars:N0} characters"));
            }

            buffer.Append((char)next);
        }

        return next < 0 && buffer.Length == 0 ? null : buffer.ToString();
    }

    /// <summary>The token quoted for an error line: its first characters, control, format (bidi) and undecodable ones escaped, as a damaged or binary file holds them.</summary>
    private static string Quote(ReadOnlySpan<char> token)
    {
        const int MaxQuoted = 32;
        var quoted = new StringBuilder("'");
        foreach (var c in token[..Math.Min(token.Length, MaxQuoted)])
        {
            if (char.IsControl(c) || char.IsSurrogate(c) || c == '\uFFFD' || char.GetUnicodeCategory(c) == UnicodeCategory.Format)
            {
                quoted.Append(CultureInfo.InvariantCulture, $"\\u{(int)c:X4}");
            }
            else
            {
                quoted.Append(c);
            }
        }

        return quoted.Append(token.Length > MaxQuoted ? "'..." : "'").ToString();
    }

    /// <summary>Joins the per-layer files of one domain into requests (line i of every layer is request i).</summary>
    public static IReadOnlyList<TraceRequest> Join(int server, IReadOnlyList<IReadOnlyList<int[]>> layers, int topK)
    {
        ArgumentNullException.ThrowIfNull(layers);
        if (layers.Count == 0)
        {
            return [];
        }

        var count = layers[0].Count;
        for (var l = 1; l < layers.Count; l++)
        {
            if (layers[l].Count != count)
            {
                throw new FormatException($"layer {l + 1} has {layers[l].Count} sequences, layer 1 has {count}");
            }
        }

        var requests = new List<TraceRequest>(count);
        for (var i = 0; i < count; i++)
        {
            var tokens = layers[0][i].Length / topK;
            var experts = new int[layers.Count][];
            for (var l = 0; l < layers.Count; l++)
            {
                if (layers[l][i].Length != tokens * topK)
                {
                    throw new FormatException($"sequence {i + 1}: layer {l + 1} has {layers[l][i].Length / topK} tokens, layer 1 has {tokens}");
                }

                experts[l] = layers[l][i];
            }

            requests.Add(new TraceRequest(server, tokens, experts));
        }

        return requests;
    }
}
